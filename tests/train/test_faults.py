"""Faults injected for real: kill -9 at random moments, SIGTERM, non-finite losses.

The kill/resume tests run `pipeline pretrain` as a subprocess (CPU, fp32, tiny model) and compare
the final weights bit for bit with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig
from tests.helpers.loop import DATA_X, reset_accelerate, run

STEPS = 24


def pretrain_cmd(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "pretrain",
        f"data.shards={shards}",
        f"output_dir={out}",
        "model.preset=tiny",
        f"train.max_steps={STEPS}",
        "train.batch_size=8",
        "train.lr=1e-3",
        "train.save_every=2",
        "train.keep_checkpoints=2",
        "train.eval_every=12",
        "train.eval_batches=1",
        "train.log_every=1",
        "train.progress=false",
        "train.peak_tflops=1",
        *extra,
    ]


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(
        pretrain_cmd(tiny_shards, out), check=True, env=child_env(), capture_output=True, timeout=600
    )
    return out


def _progress(out: Path) -> int:
    try:
        return sum(1 for _ in open(out / "metrics.jsonl"))
    except OSError:
        return 0


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tiny_shards, uninterrupted, tmp_path):
    """SIGKILL at random points (including mid-checkpoint-write), resume=auto each time, until done."""
    out, rng, kills = tmp_path / "killed", random.Random(1234), 0
    for _ in range(12):  # bounded: each attempt makes progress or completes
        proc = subprocess.Popen(
            pretrain_cmd(tiny_shards, out),
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kills < 4:
            start = _progress(out)
            target = start + rng.randint(2, 8)  # metrics lines: a random point a few steps further on
            while proc.poll() is None and _progress(out) < target:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # lands inside step / checkpoint-writing windows
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        code = proc.wait(timeout=600)
        if code == 0 and (out / "final" / "model.safetensors").is_file():
            break
    assert kills >= 3, "the run finished before it could be killed; make it longer"
    assert_same_weights(uninterrupted, out)
    assert not list((out / "checkpoints").glob("*.partial"))  # cleaned by the next save


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_75_then_resumes(tiny_shards, uninterrupted, tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(
        pretrain_cmd(tiny_shards, out, "train.log_every=1"),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while proc.poll() is None and _progress(out) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, output[-2000:]
    assert "stop signal received" in output
    saved = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert saved and saved[-1] < STEPS and not (out / "final").exists()
    subprocess.run(
        pretrain_cmd(tiny_shards, out), check=True, env=child_env(), capture_output=True, timeout=600
    )
    assert_same_weights(uninterrupted, out)


def test_nonfinite_skip_counts_and_continues(tmp_path, monkeypatch):
    import tests.helpers.loop as toy

    poisoned = DATA_X.copy()
    poisoned[5] = np.nan  # one sample: whichever step draws it gets a NaN loss and gradient
    monkeypatch.setattr(toy, "DATA_X", poisoned)
    # 16 steps x 4 samples = one full epoch of the 64 samples, so sample 5 is drawn exactly once
    summary, lines, w = run(tmp_path, max_steps=16, on_nonfinite="skip", save_every=0, eval_every=0)
    assert summary["nonfinite_steps"] == 1
    assert all(torch.isfinite(v).all() for v in w.values())
    assert [r for r in lines if "train/loss" in r][-1]["train/nonfinite_steps"] == 1


def test_nonfinite_stop_names_the_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    import tests.helpers.loop as toy

    run(tmp_path, max_steps=4, save_every=4, eval_every=0)  # a good checkpoint at step 4
    poisoned = DATA_X.copy()
    poisoned[:] = np.inf
    monkeypatch.setattr(toy, "DATA_X", poisoned)
    with pytest.raises(PipelineError, match=r"non-finite loss/gradient at step 5 .*checkpoint is kept"):
        run(tmp_path, max_steps=8, save_every=1, eval_every=0, resume="auto")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_4"]
    state = json.loads((tmp_path / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["step"] == 4


def test_on_nonfinite_is_validated():
    with pytest.raises(Exception, match="on_nonfinite"):
        from_dict(TrainConfig, dict(max_steps=1, batch_size=1, lr=1.0, on_nonfinite="ignore"))
    reset_accelerate()


def test_disk_full_during_checkpoint_leaves_previous_intact(tmp_path, monkeypatch):
    import errno

    from accelerate import Accelerator

    run(tmp_path, max_steps=4, save_every=4)
    real_save = Accelerator.save_state

    def full_disk(self, output_dir, **kwargs):
        real_save(self, output_dir, **kwargs)  # files land in the .partial dir, then the disk "fills up"
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    with pytest.raises(
        PipelineError, match=r"could not write checkpoint .*step_6.partial: No space left.*step_4 is intact"
    ):
        run(tmp_path, max_steps=8, save_every=2, resume="auto")
    assert sorted(
        p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.endswith(".partial")
    ) == ["step_4"]


def test_low_disk_space_is_refused_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from pipeline.train import prepare_output_dir

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(PipelineError, match=r"has only 1 MiB free"):
        prepare_output_dir(tmp_path / "out", from_dict(TrainConfig, dict(max_steps=1, batch_size=1, lr=1.0)))
