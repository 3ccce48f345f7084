"""Tests of pipeline/shards/stats.py: the manifest's token statistics and the helper that estimates
them for sets written before the manifest had them.

Run: ``python -m pytest tests/shards/test_stats.py -q``.  (The manifest values themselves are
checked against a hand computation in tests/shards/test_shards.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.shards import ShardReader, TokenCounter, token_statistics
from tests.helpers.shards import shard, small_corpus, small_wordpiece, to_version_1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    out = root / "shards"
    shard(small_corpus(root / "corpus"), small_wordpiece(root / "tok"), out)
    return out


def test_counter_by_hand():
    counter = TokenCounter(vocab_size=10, special_ids=[0, 3, None])
    counter.add(np.array([5, 5, 3, 7], dtype=np.uint16))
    counter.add(np.array([], dtype=np.uint16))
    counter.add(np.array([0, 5, 9, 9], dtype=np.uint16))
    stats = counter.statistics()  # 5 x3, 7 x1, 9 x2 (0 and 3 are special)
    p = np.array([3, 1, 2]) / 6
    assert stats["unigram_entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-9)
    assert stats["top_token_fraction"] == pytest.approx(0.5)
    assert TokenCounter(4, [0]).statistics() == {"unigram_entropy": None, "top_token_fraction": None}


def test_the_manifest_values_are_returned_when_present(reference):
    stats = token_statistics(reference, "validation")
    info = ShardReader(reference, "validation").manifest["splits"]["validation"]
    assert stats["source"] == "manifest"
    assert (stats["unigram_entropy"], stats["top_token_fraction"]) == (
        info["unigram_entropy"],
        info["top_token_fraction"],
    )


def test_older_sets_get_them_from_a_bounded_sample(reference, tmp_path):
    old = to_version_1(reference, tmp_path / "v1")
    for split in ("train", "validation"):
        expected = token_statistics(reference, split)
        whole = token_statistics(old, split)  # the default sample covers this small split
        assert whole["source"] == "sample"
        assert whole["unigram_entropy"] == expected["unigram_entropy"]
        assert whole["top_token_fraction"] == expected["top_token_fraction"]
    reader = ShardReader(old, "train")
    sample = token_statistics(old, "train", max_tokens=40 * reader.seq_len)
    assert 0 < sample["tokens"] <= 40 * reader.seq_len < reader.num_tokens / 5
    assert math.isclose(sample["unigram_entropy"], expected["unigram_entropy"], rel_tol=0.15)
