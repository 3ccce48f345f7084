"""``train.precision``: auto measures, explicit values win, a launcher and the config must agree.

The decision rules run on stubbed probe numbers on both sides of the margin (the machine's own
speed must not decide what is tested); the probe itself and the end-to-end record in
``summary.json`` run for real.  (tests/conftest.py pins fp32 for every other test through
``ACCELERATE_MIXED_PRECISION=no``; the tests here clear it where they test the unset case.)
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.train import precision
from pipeline.train.precision import BF16_MARGIN, choose_precision, matmul_probe
from tests.helpers.loop import reset_accelerate

CPU = torch.device("cpu")


def pretrain(shards, out, *overrides: str) -> int:
    reset_accelerate()
    tiny = ["model.preset=tiny", "train.batch_size=4", "train.lr=1e-3", "train.progress=false"]
    return main(["pretrain", f"data.shards={shards}", f"output_dir={out}", *tiny, *overrides])


def _choose(configured: str, launch: str | None = None):
    return choose_precision(configured, launch, device=CPU, matmul_dims=(64, 128))


@pytest.fixture
def probe_says(monkeypatch):
    """Make the CPU probe report bf16 at ``ratio`` x fp32."""

    def set_ratio(ratio: float) -> None:
        numbers = {"fp32": 0.1, "bf16": 0.1 * ratio, "bf16_speedup": ratio}
        monkeypatch.setattr(precision, "matmul_probe", lambda *args, **kwargs: numbers)

    return set_ratio


@pytest.mark.parametrize(
    ("ratio", "expected"), [(BF16_MARGIN + 0.05, "bf16"), (BF16_MARGIN - 0.05, "fp32"), (0.2, "fp32")]
)
def test_auto_on_cpu_follows_the_probe(probe_says, ratio, expected):
    probe_says(ratio)
    choice = _choose("auto")
    assert (choice.precision, choice.source) == (expected, "auto")
    assert f"{ratio:.2f}x fp32" in choice.reason and choice.probe["bf16_speedup"] == ratio
    assert choice.mixed_precision == ("bf16" if expected == "bf16" else "no")


@pytest.mark.parametrize("configured", ["fp32", "bf16", "fp16"])
def test_explicit_config_wins_over_the_probe(probe_says, configured):
    probe_says(5.0)
    choice = _choose(configured)
    assert (choice.precision, choice.source, choice.probe) == (configured, "train.precision", {})


@pytest.mark.parametrize(("launch", "expected"), [("no", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")])
def test_launcher_wins_over_auto_and_agrees_with_the_same_config(probe_says, launch, expected):
    probe_says(5.0 if expected == "fp32" else 0.2)  # the probe would say the opposite
    assert _choose("auto", launch).precision == expected
    assert _choose(expected, launch).source == "launch"


def test_launcher_and_config_that_disagree_are_one_clear_error():
    with pytest.raises(PipelineError, match=r"mixed precision 'no' \(fp32\) but train.precision=bf16"):
        _choose("bf16", "no")
    with pytest.raises(PipelineError, match="unknown mixed precision 'fp4'"):
        _choose("auto", "fp4")


def test_probe_measures_both_dtypes_once_per_process():
    first = matmul_probe(CPU, 32, 48, seconds=0.01)
    assert first["fp32"] > 0 and first["bf16"] > 0 and first["bf16_speedup"] > 0
    assert matmul_probe(CPU, 32, 48, seconds=0.01) is first  # cached: no second measurement


def test_pretrain_records_the_auto_choice_and_honours_an_explicit_one(tiny_shards, tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    common = ["train.max_steps=1", "train.eval_every=0", "train.save_every=0"]
    assert pretrain(tiny_shards, tmp_path / "auto", *common) == 0
    chosen = json.loads((tmp_path / "auto" / "summary.json").read_text())["precision"]
    assert chosen["source"] == "auto"
    assert chosen["precision"] == ("bf16" if chosen["probe"]["bf16_speedup"] >= BF16_MARGIN else "fp32")
    assert pretrain(tiny_shards, tmp_path / "fp32", *common, "train.precision=fp32") == 0
    pinned = json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"]
    assert (pinned["precision"], pinned["source"]) == ("fp32", "train.precision")


def test_conflicting_launch_and_config_stop_before_training(tiny_shards, tmp_path, capsys):
    # conftest exports ACCELERATE_MIXED_PRECISION=no, as `accelerate launch --mixed_precision no` does
    assert pretrain(tiny_shards, tmp_path, "train.max_steps=1", "train.precision=bf16") == 2
    assert "train.precision=bf16" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()
