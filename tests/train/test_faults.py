"""Faults injected for real: kill -9 (at random moments, and while a checkpoint is being written),
SIGTERM / SIGUSR1, a full disk, too little space, non-finite losses.

The kill/resume tests run `pipeline pretrain` as a subprocess (CPU, fp32, tiny model) and compare
the final weights bit for bit with an uninterrupted run - and check that the run after the fault
really resumed (its log line and summary.json's ``steps_this_run``): training is deterministic, so a
silent restart from step 0 would reproduce the same weights.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, TrainerState, check_checkpoint
from tests.helpers.faults import fill_disk, pause_env, release, tmpfs, wait_until_paused
from tests.helpers.loop import DATA_X, reset_accelerate, run

STEPS = 24


def pretrain_cmd(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "pretrain",
        *pretrain_args(shards, out, *extra),
    ]


def pretrain_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
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


def child_env(**extra: str) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def resume_and_finish(shards: Path, out: Path) -> str:
    """Rerun the command to completion; returns its output."""
    proc = subprocess.run(
        pretrain_cmd(shards, out), env=child_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def assert_resumed_at(out: Path, output: str, step: int) -> None:
    """The last run loaded ``step_<step>`` (step > 0), trained only the rest, and skipped nothing."""
    assert step > 0
    assert f"resumed from {out / 'checkpoints' / f'step_{step}'} at step {step}" in output, output[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps_this_run"] == STEPS - step
    assert "falling back to the previous checkpoint" not in output, output[-2000:]


def saved_steps(out: Path) -> list[int]:
    return sorted(
        int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*") if p.name[5:].isdigit()
    )


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
    """SIGKILL at random points, resume=auto each time, until done; every run after a kill that
    left a checkpoint must resume from it."""
    out, rng, kills = tmp_path / "killed", random.Random(1234), 0
    for attempt in range(12):  # bounded: each attempt makes progress or completes
        before = saved_steps(out) if (out / "checkpoints").is_dir() else []
        log = tmp_path / f"attempt{attempt}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(pretrain_cmd(tiny_shards, out), env=child_env(), stdout=f, stderr=f)
            if kills < 4:
                start = _progress(out)
                target = start + rng.randint(2, 8)  # metrics lines: a random point a few steps further on
                while proc.poll() is None and _progress(out) < target:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.3))  # lands inside a step or a checkpoint write
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            code = proc.wait(timeout=600)
        text = log.read_text()
        if before:  # a checkpoint survived the previous kill: this run must have resumed from one
            assert re.search(r"resumed from \S+step_(\d+) at step \1", text), text[-2000:]
        if code == 0 and (out / "final" / "model.safetensors").is_file():
            break
    assert kills >= 3, "the run finished before it could be killed; make it longer"
    last_start = int(re.search(r"resumed from \S+ at step (\d+)", text).group(1))
    assert_resumed_at(out, text, last_start)
    assert_same_weights(uninterrupted, out)
    assert not list((out / "checkpoints").glob("*.partial"))  # cleaned by the next save


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["begin", "written"])
def test_kill_9_while_a_checkpoint_is_written(tiny_shards, uninterrupted, tmp_path, phase):
    """The kill lands while ``step_6.partial/`` exists - empty ('begin') or holding every file but
    trainer_state.json ('written') - and the rerun resumes from step 4, bit-identically."""
    out, flags = tmp_path / "run", tmp_path / "flags"
    proc = subprocess.Popen(
        pretrain_cmd(tiny_shards, out),
        env=child_env(**pause_env(6, phase, flags)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        partial = wait_until_paused(flags, proc)
        assert partial == out / "checkpoints" / "step_6.partial" and partial.is_dir()
        if phase == "written":
            assert (partial / "model.safetensors").is_file() and (partial / "optimizer.bin").is_file()
            assert not (partial / "trainer_state.json").exists()
        assert saved_steps(out) == [2, 4]
    finally:
        proc.kill()
        proc.wait()
    assert partial.is_dir() and not (out / "checkpoints" / "step_6").exists()
    output = resume_and_finish(tiny_shards, out)
    assert_resumed_at(out, output, 4)
    assert_same_weights(uninterrupted, out)
    assert not list((out / "checkpoints").glob("*.partial"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_stop_signal_checkpoints_and_exits_75_then_resumes(tiny_shards, uninterrupted, tmp_path, sig):
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        pretrain_cmd(tiny_shards, out),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while proc.poll() is None and _progress(out) < 5:
        time.sleep(0.01)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, output[-2000:]
    stopped_at = int(re.search(r"stop signal received: checkpointing at step (\d+)", output).group(1))
    assert saved_steps(out)[-1] == stopped_at < STEPS and not (out / "final").exists()
    assert json.loads((out / "summary.json").read_text())["completed"] is False
    assert_resumed_at(out, resume_and_finish(tiny_shards, out), stopped_at)
    assert_same_weights(uninterrupted, out)


@pytest.mark.slow
def test_full_disk_while_writing_a_checkpoint(tiny_shards, uninterrupted, tmp_path):
    """A real filesystem fills up while step_4 is written: one error naming the checkpoint, step_4
    never appears, step_2 stays intact - and once space is freed the rerun resumes from it."""
    flags = tmp_path / "flags"
    with tmpfs(tmp_path / "disk", 110) as disk:  # > the 100 MiB the run asks for at the start
        out = disk / "run"
        proc = subprocess.Popen(
            pretrain_cmd(tiny_shards, out),
            env=child_env(**pause_env(4, "begin", flags)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until_paused(flags, proc)
            filler = fill_disk(disk)
        finally:
            release(flags)
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2, output[-3000:]
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, errors
        assert re.search(
            r"could not write checkpoint \S+step_4\.partial: .+; the previous checkpoint \S+step_2 is intact",
            errors[0],
        ), errors[0]
        assert saved_steps(out) == [2] and not (out / "final").exists()
        assert check_checkpoint(out / "checkpoints" / "step_2")["step"] == 2
        filler.unlink()
        assert_resumed_at(out, resume_and_finish(tiny_shards, out), 2)
        assert_same_weights(uninterrupted, out)


def test_low_disk_space_is_refused_before_training(tiny_shards, tmp_path, capsys):
    """A real 50 MiB filesystem: the CLI refuses with one error and runs no step."""
    with tmpfs(tmp_path / "small", 50) as disk:
        reset_accelerate()
        assert main(["pretrain", *pretrain_args(tiny_shards, disk / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(
            r"output_dir \S+run has only \d+ MiB free; need at least 100 MiB", err[0]
        )
        assert not (disk / "run" / "metrics.jsonl").exists() and not (disk / "run" / "checkpoints").exists()
        assert [p.name for p in disk.rglob("*")] == ["run"]  # created, then nothing written into it


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


def test_fp16_overflow_is_left_to_the_grad_scaler():
    """fp16 runs only on GPUs (Accelerate gives CPUs no grad scaler), so this checks our side: under
    fp16 a non-finite gradient goes to the optimizer step, where the scaler skips it and lowers
    the scale - neither counted as skipped nor a stop - while without fp16 the same norm is caught."""
    from pipeline.train.loop import _Trainer

    def trainer(precision: str, on_nonfinite: str):
        return SimpleNamespace(
            acc=SimpleNamespace(mixed_precision=precision, device=torch.device("cpu")),
            cfg=SimpleNamespace(on_nonfinite=on_nonfinite),
            state=TrainerState(),
            first_bad=torch.tensor(-1),
        )

    overflow = torch.tensor(float("inf"))
    for policy in ("stop", "skip"):
        fp16 = trainer("fp16", policy)
        assert _Trainer._step_allowed(fp16, overflow) is True
        assert int(fp16.first_bad) == -1 and fp16.state.nonfinite_steps == 0
    fp32_stop, fp32_skip = trainer("no", "stop"), trainer("no", "skip")
    _Trainer._step_allowed(fp32_stop, overflow)
    assert int(fp32_stop.first_bad) == 1
    assert _Trainer._step_allowed(fp32_skip, overflow) is False and fp32_skip.state.nonfinite_steps == 1


def test_on_nonfinite_is_validated():
    with pytest.raises(Exception, match="on_nonfinite"):
        from_dict(TrainConfig, dict(max_steps=1, batch_size=1, lr=1.0, on_nonfinite="ignore"))
    reset_accelerate()
