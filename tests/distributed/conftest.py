"""Runs shared by the 2-process tests (session scope: each is launched once per test session).

* ``single``: one plain process with the global batch of 4 - as one batch (``batch``), as two
  accumulated micro-batches (``accum``), and the latter stopped after ``STEPS // 2`` steps
  (``stopped``, a checkpoint for the elastic tests; never resumed in place).
* ``launched`` (per backend): 2 processes x micro-batch 1 x grad_accum 2 uninterrupted (``full``),
  stopped after ``STEPS // 2`` then resumed in place (``resumed``), and a copy of the stopped run
  (``stopped``) that the elastic tests resume with another process count.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.distributed import BACKENDS, STOPPED, build_shards, run_launched, run_single

STEPS = 8
LAUNCHED = {"batch_size": 1, "grad_accum": 2}  # x 2 processes = global batch 4
ONE_PROCESS = {"batch_size": 2, "grad_accum": 2}  # the same global batch on 1 process


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="session")
def shards(workdir):
    return build_shards(workdir)


@pytest.fixture(scope="session")
def single(shards, workdir):
    stopped = run_single(
        shards, workdir / "single-b2x2-stopped", expect=STOPPED, stop_after=STEPS // 2, **ONE_PROCESS
    )
    return {
        "batch": run_single(shards, workdir / "single-b4", batch_size=4),
        "accum": run_single(shards, workdir / "single-b2x2", **ONE_PROCESS),
        "stopped": stopped,
    }


_LAUNCHED: dict[str, dict] = {}  # pytest may set a session fixture up twice when tests interleave


def launched_runs(name: str, shards, workdir) -> dict:
    """The runs of backend ``name`` (made on first use)."""
    backend = BACKENDS[name]
    if backend.requires:
        pytest.importorskip(backend.requires, reason=f"{backend.name} needs `pip install {backend.requires}`")
    if name not in _LAUNCHED:
        full = run_launched(backend, shards, workdir / f"{name}-full", **LAUNCHED)
        split = workdir / f"{name}-resumed"
        run_launched(backend, shards, split, expect=STOPPED, stop_after=STEPS // 2, **LAUNCHED)
        stopped_at = sorted(p.name for p in (split / "checkpoints").iterdir())
        assert not (split / "final").exists() and stopped_at == [f"step_{STEPS // 2}"], stopped_at
        stopped = workdir / f"{name}-stopped"
        shutil.copytree(split, stopped)
        run_launched(backend, shards, split, **LAUNCHED)
        _LAUNCHED[name] = {
            "name": name,
            "backend": backend,
            "full": full,
            "resumed": split,
            "stopped": stopped,
        }
    return _LAUNCHED[name]


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def launched(request, shards, workdir):
    return launched_runs(request.param, shards, workdir)
