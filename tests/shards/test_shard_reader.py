"""Tests of ``ShardReader`` (pipeline/shards/reader.py): O(1) access, ``take``, validation on open,
corrupted / truncated shards, and the uint32 path for vocabularies over 65535 tokens.

Run: ``python -m pytest tests/shards/test_shard_reader.py -q``.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pipeline.errors import PipelineError
from pipeline.shards import ShardReader
from tests.helpers.shards import SPECIALS, save_tokenizer, shard, small_corpus, small_wordpiece


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reader")
    out = root / "shards"
    shard(small_corpus(root / "corpus"), small_wordpiece(root / "tok"), out)
    return out


def test_reader_random_access_and_take(reference):
    reader = ShardReader(reference / "manifest.json", "train")
    assert len(reader) > 100 and reader.seq_len == 32 and reader.dtype == np.uint16
    row = reader[73]
    assert isinstance(row.base, np.memmap) or isinstance(row, np.memmap)  # a view, not a loaded copy
    rng = np.random.default_rng(0)
    indices = rng.integers(-len(reader), len(reader), size=300)
    taken = reader.take(indices)
    assert taken.dtype == np.int64 and taken.shape == (300, 32)
    assert np.array_equal(taken, np.stack([reader[int(i)] for i in indices]))
    assert np.array_equal(reader.take(np.array([], dtype=np.int64)), np.empty((0, 32)))
    with pytest.raises(IndexError):
        reader[len(reader)]
    with pytest.raises(IndexError):
        reader.take([0, len(reader)])
    clone = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 10_000 and np.array_equal(clone[5], reader[5])
    assert reader.tokenizer_dir == reference / "tokenizer"
    with pytest.raises(PipelineError, match="vocab"):
        reader.check_compatible(vocab_size=reader.vocab_size - 1)
    with pytest.raises(PipelineError, match="positions"):
        reader.check_compatible(max_positions=16)


def test_reader_detects_truncated_and_corrupted_shards(reference, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    shard_file = broken / "train-00001.bin"
    data = bytearray(shard_file.read_bytes())
    data[10] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    ShardReader(broken)  # same size: only the checksum can tell
    with pytest.raises(PipelineError, match=r"train-00001\.bin is truncated or corrupted"):
        ShardReader(broken, verify=True)
    shard_file.write_bytes(bytes(data[:-7]))
    with pytest.raises(PipelineError, match=r"train-00001\.bin is truncated or corrupted"):
        ShardReader(broken)
    shard_file.unlink()
    with pytest.raises(PipelineError, match=r"missing.*train-00001\.bin"):
        ShardReader(broken)
    with pytest.raises(PipelineError, match="no split 'test'"):
        ShardReader(reference, "test")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(PipelineError, match="manifest.json is not valid JSON"):
        ShardReader(broken)
    with pytest.raises(PipelineError, match="no shard set"):
        ShardReader(tmp_path / "nowhere")


def test_uint32_shards_for_a_large_vocabulary(tmp_path):
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": len(SPECIALS) + i for i in range(70_000)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = save_tokenizer(tok, tmp_path / "big")
    text = tmp_path / "big.txt"
    text.write_text("w69999 w1 w65535\nw70000 w42\n", encoding="utf-8")
    manifest = shard([text], tokenizer, tmp_path / "out", seq_len=8, val_fraction=0.0)
    assert manifest["dtype"] == "uint32" and manifest["tokenizer"]["vocab_size"] == 70_005
    reader = ShardReader(tmp_path / "out")
    assert reader.dtype == np.uint32
    w = len(SPECIALS)
    assert reader.take([0])[0].tolist() == [2, w + 69999, w + 1, w + 65535, 3, 1, w + 42, 3]
    assert manifest["splits"]["validation"] == {
        "shards": [],
        "num_documents": 0,
        "num_tokens": 0,
        "num_sequences": 0,
        "padding_fraction": 0.0,
    }
    assert len(ShardReader(tmp_path / "out", "validation")) == 0
