"""Real faults for the fault-matrix tests: a small filesystem that fills up, a directory the run
may not write to, and a checkpoint save held at a known point (``PIPELINE_TEST_PAUSE_CHECKPOINT``,
see ``pipeline/train/checkpoint.py``) so a kill or a full disk lands there, not at a lucky moment.

Mounting and dropping privileges need root; without it the tests that need them skip and say why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.train.checkpoint import PAUSE_ENV

NOBODY = 65534


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int):
    """A tmpfs of ``size_mib`` MiB mounted at ``path`` (created), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (run as root to test a really full disk)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path) -> Path:
    """Write one file until the filesystem of ``directory`` has no space left."""
    filler = directory / "filler"
    block = b"\0" * 2**20
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    for size in (2**16, 2**12, 1):  # the last scraps
        with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as f:
            while True:
                f.write(b"\0" * size)
    return filler


@contextlib.contextmanager
def read_only_dir():
    """A directory with mode 0500 that anyone may reach (removed afterwards)."""
    holder = Path(tempfile.mkdtemp(prefix="pipeline-readonly-"))
    holder.chmod(0o755)  # nobody may pass through /tmp/pipeline-readonly-*/ to reach it
    locked = holder / "out"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        yield locked
    finally:
        locked.chmod(0o700)
        subprocess.run(["rm", "-rf", str(holder)], check=False)


@contextlib.contextmanager
def mode_bits_apply():
    """Inside the block, file mode bits apply to this process: as root (which ignores them) the
    effective user and group become ``nobody``'s; otherwise nothing changes."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.setegid(NOBODY)
        os.seteuid(NOBODY)
    except OSError as e:
        pytest.skip(f"cannot drop root privileges to test a permission error: {e}")
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def pause_env(step: int, phase: str, flags: Path) -> dict[str, str]:
    """Environment that holds the save of ``step`` at ``phase`` ('begin' or 'written')."""
    return {PAUSE_ENV: f"{step}:{phase}:{flags}"}


def wait_until_paused(flags: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """Block until the run is held inside the save; returns the ``step_N.partial`` it is writing."""
    deadline = time.monotonic() + timeout
    while not (flags / "paused").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the run never reached the checkpoint pause (exit code {proc.poll()})")
        time.sleep(0.02)
    return Path((flags / "paused").read_text())


def release(flags: Path) -> None:
    (flags / "release").write_text("go")
