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


def synthetic_corpus(path: Path, num_docs: int = 400, seed: int = 0) -> Path:
    """A small deterministic English-like corpus with learnable structure (templated sentences)."""
    import random

    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the bird", "a young girl", "the teacher"]
    verbs = ["sees", "likes", "follows", "paints", "finds", "helps", "watches"]
    objects = ["the red ball", "a green tree", "the small house", "a blue car", "the tall tower", "an apple"]
    places = ["in the park", "near the river", "at school", "in the garden", "on the hill"]
    lines = []
    for _ in range(num_docs):
        sentences = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)} ."
            for _ in range(rng.randint(2, 6))
        ]
        lines.append(" ".join(sentences))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
