"""Fixtures shared by every test folder (helpers to import live in ``tests/helpers/``).

Real data lives outside the repo at ``../shared/data`` (next to the checkout) or wherever
``PIPELINE_DATA`` points; tests that need it skip with a message when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.corpus import synthetic_corpus

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
    from pipeline.text import forget_unreachable_hub

    forget_unreachable_hub()  # each test asks the (offline) hub afresh


@pytest.fixture(scope="session", autouse=True)
def _fp32_unless_a_test_says_otherwise():
    """train.precision=auto would pick bf16 on some CPUs and fp32 on others, and the tests' tolerances
    must not depend on the machine: every run is fp32, as `accelerate launch --mixed_precision no`
    says it (tests/train/test_precision.py covers auto by clearing this).  Session scope, so module
    fixtures that train (and their subprocesses) see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELERATE_MIXED_PRECISION", "no")
        yield


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """Tokenizer + shard set (seq_len 64) built by the real stages from a synthetic corpus."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("tiny_shards")
    corpus = synthetic_corpus(root / "corpus.txt")
    tok = root / "tokenizer"
    assert (
        main(["tokenizer", f"input=[{corpus}]", f"output_dir={tok}", "vocab_size=200", "min_frequency=1"])
        == 0
    )
    shards = root / "shards"
    args = [
        "shard",
        f"input=[{corpus}]",
        f"tokenizer={tok}",
        f"output_dir={shards}",
        "seq_len=64",
        "val_fraction=0.1",
        "num_proc=1",
        "progress=false",
    ]
    assert main(args) == 0
    return shards


@pytest.fixture(scope="session")
def tiny_pretrained(tiny_shards, tmp_path_factory) -> Path:
    """``final/`` of a 4-step tiny pretraining run on ``tiny_shards``."""
    from pipeline.cli import main
    from tests.helpers.loop import reset_accelerate

    out = tmp_path_factory.mktemp("pretrained")
    reset_accelerate()
    args = [
        "pretrain",
        f"data.shards={tiny_shards}",
        f"output_dir={out}",
        "model.preset=tiny",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.lr=1e-3",
        "train.progress=false",
        "train.peak_tflops=1",
    ]
    assert main(args) == 0
    return out / "final"
