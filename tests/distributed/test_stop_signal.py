"""SIGUSR1 (what Slurm sends before a time limit) to ONE process of a 2-process DDP run launched
with `accelerate launch`: every process stops at the same step, the checkpoint holds the state of
both, and the rerun resumes from it bit-identically (no Slurm involved; tests/slurm/ covers that).

The signal goes to rank 1 only, while both processes are held inside the save of step 4
(``PIPELINE_TEST_PAUSE_CHECKPOINT``): rank 0, which never receives it, must announce the stop -
so the stop flag really travels through the loop's all-reduce - and nothing depends on timing.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch

from pipeline.train import check_checkpoint
from tests.distributed.conftest import LAUNCHED, STEPS, launched_runs
from tests.helpers import distributed as h
from tests.helpers.faults import pause_env, release, wait_until_paused

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
STOP = STEPS // 2


def _ranks(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the worker processes under the launcher."""
    children = subprocess.run(
        ["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True
    ).stdout.split()
    ranks = {}
    for pid in map(int, children):
        environ = dict(
            item.split("=", 1)
            for item in open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
            if "=" in item
        )
        ranks[int(environ["RANK"])] = pid
    return ranks


def test_sigusr1_to_one_process_stops_every_process_at_the_same_step(shards, workdir):
    reference = launched_runs("ddp", shards, workdir)["full"]
    out, flags = workdir / "ddp-sigusr1", workdir / "ddp-sigusr1.flags"
    log = h.run_log(out, stopped=True)
    env = h._env(pause_env(STOP, "begin", flags))
    with open(log, "w") as f:
        proc = subprocess.Popen(
            h.launch_cmd(h.BACKENDS["ddp"], shards, out, **LAUNCHED),
            cwd=h.ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_paused(flags, proc)  # the pause follows a barrier: both ranks are in the save
        ranks = _ranks(proc.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGUSR1)
        release(flags)
        proc.wait(timeout=120)  # a process that did not hear of the stop would hang its peer
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert proc.returncode != 0 and f"stop signal received: checkpointing at step {STOP}" in text, text[
        -3000:
    ]
    checkpoint = out / "checkpoints" / f"step_{STOP}"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [checkpoint.name]
    assert check_checkpoint(checkpoint)["step"] == STOP
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}
    assert h.summary(out)["completed"] is False and h.summary(out)["steps"] == STOP

    h.run_launched(h.BACKENDS["ddp"], shards, out, **LAUNCHED)
    h.assert_resumed(out, STOP, STEPS)
    expected, got = h.final_weights(reference), h.final_weights(out)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
