"""Files that are either complete or absent: atomic writes, directory swaps, fsync and sha256.

The one copy of these jobs for every stage (resolved configs, manifests, work-unit records,
checkpoint state, summaries, predictions, exported model directories).  A write goes to
``<name>.tmp`` beside the target and is renamed over it, so a reader (or a run killed midway) sees
the old file or the new one, never half of one; ``fsync=True`` also flushes the data to disk first
(checkpoints, which must survive a power cut).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "fsync_dir",
    "replace_dir",
    "sha256_file",
    "write_json",
    "write_text",
]


@contextmanager
def atomic_open(path: str | Path, *, fsync: bool = False, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file handle whose content replaces ``path`` only when the block ends without error."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_open(path, fsync=fsync) as f:
        f.write(text)


def write_json(
    path: str | Path,
    data: Any,
    *,
    end: str = "",
    fsync: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Replace ``path`` with ``data`` as indented JSON (+ ``end``, e.g. a final newline) atomically."""
    write_text(path, json.dumps(data, indent=2, default=default) + end, fsync=fsync)


def fsync_dir(path: str | Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(src: Path, dst: Path, retired: Path | None = None) -> None:
    """Make directory ``src`` appear at ``dst`` without a moment where neither is valid.

    An old ``dst`` is renamed to ``retired`` (default ``<dst>.old.partial``) first and deleted after;
    if the final rename fails, the old, complete ``dst`` is put back."""
    retired = retired or dst.with_name(dst.name + ".old.partial")
    if retired.exists():
        shutil.rmtree(retired)
    if dst.exists():
        dst.rename(retired)
    try:
        src.rename(dst)
    except OSError:
        if retired.exists():
            retired.rename(dst)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
