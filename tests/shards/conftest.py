"""Fixtures of the shard tests: a tiny WordPiece tokenizer directory and a three-file corpus
(tests/helpers/shards.py builds them), one of each per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.shards import small_corpus, small_wordpiece


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return small_wordpiece(tmp_path_factory.mktemp("tok") / "wordpiece")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return small_corpus(tmp_path_factory.mktemp("corpus"))
