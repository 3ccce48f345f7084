"""Elastic resume: a checkpoint written by N processes resumes on M - 2 -> 1 and 1 -> 2 under each
backend's own launch config (DDP, FSDP2, ZeRO-2, ZeRO-3) - and an FSDP2 checkpoint resumes in a
plain process without FSDP, and a plain one under FSDP2 (a preempted job that comes back on one
GPU, or on more).

Each resumed run must resume from step 4 (log line, summary.json's ``steps_this_run``, no
checkpoint skipped), say it resharded, and match the uninterrupted single-process run with the
same global batch: per-step losses of steps 5..8 within LOSS_RTOL and final weights within
WEIGHT_RTOL of each tensor's largest entry.  Attention key biases are the exception: softmax is
invariant to them, so their gradient is zero in exact arithmetic and their values (~1e-9) are
Adam-amplified rounding noise; they are checked to stay that small instead.
"""

from __future__ import annotations

import math
import shutil

import pytest

from tests.distributed.conftest import LAUNCHED, ONE_PROCESS, STEPS, launched_runs
from tests.helpers.distributed import (
    BACKENDS,
    STOPPED,
    assert_resumed,
    final_weights,
    run_launched,
    run_log,
    run_single,
    train_records,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STOP = STEPS // 2
LOSS_RTOL = 1e-5  # observed <= 1e-7
WEIGHT_RTOL = 5e-5  # observed <= 6e-6 of a tensor's largest entry: fp32 reduction order, 4 Adam steps
KEY_BIAS_ATOL = 1e-7  # observed <= 4e-9 in every run, resumed or not


def _copy(run, to):
    shutil.copytree(run, to)
    return to


def _assert_like_uninterrupted(run, reference, saved: str, loaded: str) -> None:
    assert_resumed(run, STOP, STEPS)
    log = run_log(run).read_text(errors="replace")
    assert f"resharded checkpoint step_{STOP}: written by {saved}, loaded by {loaded}" in log, log[-3000:]
    got, expected = train_records(run), train_records(reference)
    for step in range(STOP + 1, STEPS + 1):
        assert math.isclose(got[step]["train/loss"], expected[step]["train/loss"], rel_tol=LOSS_RTOL), step
    weights, reference_weights = final_weights(run), final_weights(reference)
    assert weights.keys() == reference_weights.keys()
    for name, value in reference_weights.items():
        if name.endswith("attention.self.key.bias"):
            assert value.abs().max() <= KEY_BIAS_ATOL and weights[name].abs().max() <= KEY_BIAS_ATOL, name
            continue
        error = (weights[name] - value).abs().max().item() / value.abs().max().item()
        assert error <= WEIGHT_RTOL, f"{run.name}: {name} differs by {error:.2e} of its largest entry"


@pytest.fixture(scope="module")
def elastic(launched, shards, workdir):
    """The launched 2-process checkpoint resumed by 1 process, and a 1-process one by 2."""
    backend, name = launched["backend"], launched["name"]
    two_to_one = _copy(launched["stopped"], workdir / f"{name}-2to1")
    run_launched(backend, shards, two_to_one, processes=1, **ONE_PROCESS)
    one = workdir / f"{name}-1proc"
    run_launched(backend, shards, one, expect=STOPPED, processes=1, stop_after=STOP, **ONE_PROCESS)
    one_to_two = _copy(one, workdir / f"{name}-1to2")
    run_launched(backend, shards, one_to_two, **LAUNCHED)
    return {"name": name, "2 -> 1": two_to_one, "1 -> 2": one_to_two}


KIND = {"ddp": "plain", "fsdp2": "fsdp", "zero2": "deepspeed", "zero3": "deepspeed"}


def test_resumes_with_another_process_count(elastic, single):
    kind = KIND[elastic["name"]]
    _assert_like_uninterrupted(
        elastic["2 -> 1"], single["batch"], f"{kind} x 2 processes", f"{kind} x 1 process"
    )
    _assert_like_uninterrupted(
        elastic["1 -> 2"], single["batch"], f"{kind} x 1 process", f"{kind} x 2 processes"
    )


def test_fsdp_checkpoint_resumes_without_fsdp_and_back(shards, single, workdir):
    fsdp = BACKENDS["fsdp2"]
    to_plain = _copy(launched_runs("fsdp2", shards, workdir)["stopped"], workdir / "fsdp2-to-plain")
    run_single(shards, to_plain, **ONE_PROCESS)
    _assert_like_uninterrupted(to_plain, single["batch"], "fsdp x 2 processes", "plain x 1 process")
    to_fsdp = _copy(single["stopped"], workdir / "plain-to-fsdp2")
    run_launched(fsdp, shards, to_fsdp, **LAUNCHED)
    _assert_like_uninterrupted(to_fsdp, single["batch"], "plain x 1 process", "fsdp x 2 processes")


def test_deepspeed_and_other_checkpoints_do_not_mix(shards, single, workdir):
    """Where resharding cannot work (a ZeRO checkpoint without DeepSpeed), one error says which."""
    pytest.importorskip("deepspeed")
    foreign = _copy(launched_runs("zero2", shards, workdir)["stopped"], workdir / "zero2-to-plain")
    with pytest.raises(AssertionError, match="exit code 2"):
        run_single(shards, foreign, **ONE_PROCESS)
    log = run_log(foreign).read_text(errors="replace")
    assert "written by deepspeed x 2 processes and this run is plain x 1 process" in log, log[-2000:]
    assert "train.resume=auto: none of the 1 checkpoint(s)" in log and not (foreign / "final").exists()


def test_key_biases_get_no_gradient(single):
    """What excuses the key biases above: in the uninterrupted run they stay at rounding level."""
    weights = final_weights(single["batch"])
    biases = [name for name in weights if name.endswith("attention.self.key.bias")]
    assert biases and all(weights[name].abs().max() <= KEY_BIAS_ATOL for name in biases)
    assert any(weights[name.replace("key", "query")].abs().max() > 100 * KEY_BIAS_ATOL for name in biases)
