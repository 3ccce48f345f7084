"""pipeline/train/throughput.py: the peak-FLOP/s probe must not touch the global RNG (it runs once per
process, so a run's dropout masks would depend on which stage ran first in that process)."""

from __future__ import annotations

import torch

from pipeline.train import measure_peak_flops


def test_peak_probe_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr("pipeline.train.throughput._PROBE_CACHE", {})  # force a real measurement
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    assert measure_peak_flops(torch.device("cpu"), torch.float32, seconds=0.05) > 0
    assert torch.equal(torch.rand(4), expected)
