"""Shared test fixtures.

Real data lives outside the repo at ``../shared/data`` (next to the checkout) or wherever
``PIPELINE_DATA`` points; tests that need it skip with a message when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIPELINE_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real datasets (WikiText-2, GLUE); skips the test if they are not there."""
    if not (SHARED_DATA / "wikitext-2" / "train.txt").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set PIPELINE_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # 2-core CI machine: keep each test process from oversubscribing cores
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
