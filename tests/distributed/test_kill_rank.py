"""Kill one rank of a 2-process DDP run with SIGKILL: the whole job must die (no hung survivor),
and `resume=auto` must resume from the newest checkpoint (not start over) and finish with weights
bit-identical to an uninterrupted 2-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import distributed as h

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
STEPS = dict(max_steps=12, save_every=2, eval_every=6, keep_checkpoints=2)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _launch_and_kill_one_rank(shards, out, log) -> int:
    cmd = h.launch_cmd(h.BACKENDS["ddp"], shards, out, **STEPS)
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=h.ROOT, env=h._env({}), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.time() + h.RUN_TIMEOUT_S
    while time.time() < deadline and proc.poll() is None:
        lines = (out / "metrics.jsonl").read_text().count("\n") if (out / "metrics.jsonl").exists() else 0
        if lines >= 5:  # past the first checkpoint (step 2), mid-run
            break
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2, f"expected 2 worker processes under the launcher, found {workers}"
    os.kill(max(workers), signal.SIGKILL)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the job hung after one rank was killed") from None
    for _ in range(50):  # the survivor is torn down by the launcher
        if not _alive(proc.pid):
            break
        time.sleep(0.1)
    assert not _alive(proc.pid), "a process of the killed job survived"
    return code


def test_kill_one_rank_then_resume(tmp_path):
    shards = h.build_shards(tmp_path)
    reference = h.run_launched(h.BACKENDS["ddp"], shards, tmp_path / "reference", **STEPS)
    out = tmp_path / "killed"
    assert _launch_and_kill_one_rank(shards, out, tmp_path / "killed.log") != 0
    assert not (out / "final").exists()
    complete = [int(p.name[5:]) for p in (out / "checkpoints").glob("step_*") if p.name[5:].isdigit()]
    assert complete, "no checkpoint was complete before the kill"
    survived = max(complete)
    h.run_launched(h.BACKENDS["ddp"], shards, out, **STEPS)
    h.assert_resumed(out, survived, STEPS["max_steps"])  # step > 0: not a silent restart
    expected, got = h.final_weights(reference), h.final_weights(out)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
