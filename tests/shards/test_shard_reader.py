"""Tests of ``ShardReader`` (pipeline/shards/reader.py): O(1) access, ``take``, validation on open,
corrupted / truncated shards and index, lazy opening under a low open-file limit, version 1
manifests, and the uint32 path for vocabularies over 65535 tokens.

Run: ``python -m pytest tests/shards/test_shard_reader.py -q``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pipeline.errors import PipelineError
from pipeline.shards import ShardReader
from tests.helpers import ROOT
from tests.helpers.shards import SPECIALS, save_tokenizer, shard, small_corpus, small_wordpiece, to_version_1


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
    empty_index = {"file": "validation.index.tsv", "sha256": hashlib.sha256(b"").hexdigest()}
    assert manifest["splits"]["validation"] == {
        "num_documents": 0,
        "num_tokens": 0,
        "num_sequences": 0,
        "padding_fraction": 0.0,
        "unigram_entropy": None,
        "top_token_fraction": None,
        "shard_size": 50,
        "num_shards": 0,
        "index": empty_index,
        "shards": [],
    }
    assert len(ShardReader(tmp_path / "out", "validation")) == 0


def test_open_maps_are_an_lru_of_max_open(reference):
    reader = ShardReader(reference, "train", max_open=2)
    everything = reader.take(np.arange(len(reader)))
    assert len(reader._maps) == 2 and reader.layout.num_shards > 2
    rng = np.random.default_rng(1)
    for _ in range(20):
        indices = rng.integers(0, len(reader), size=17)
        assert np.array_equal(reader.take(indices), everything[indices])
        assert np.array_equal(reader[int(indices[0])], everything[indices[0]])
        assert len(reader._maps) <= 2
        assert next(reversed(reader._maps)) == reader.layout.locate(int(indices[0]))[0]  # most recent


FEW_FILES = """
import resource, sys
import numpy as np
from pipeline.shards import ShardReader
resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
reader = ShardReader(sys.argv[1], "train", max_open=int(sys.argv[2]))
taken = reader.take(np.arange(len(reader))[::-1])  # every file, in reverse
rows = np.empty_like(taken)
for i in range(len(reader)):  # every file again, through row views
    rows[i] = reader[i]
assert (taken[::-1] == rows).all()
print(reader.layout.num_shards, len(reader._maps))
"""


def test_a_set_of_more_files_than_the_open_file_limit(tmp_path):
    root = tmp_path / "many"
    out = root / "shards"
    shard(small_corpus(root / "corpus"), small_wordpiece(root / "tok"), out, seq_len=8, shard_size=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", FEW_FILES, str(out)]
    done = subprocess.run([*run, "128"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    files, still_open = map(int, done.stdout.split())
    assert files > 1000 and still_open == 128
    unbounded = subprocess.run([*run, str(10**6)], env=env, capture_output=True, text=True)
    assert unbounded.returncode != 0 and "Too many open files" in unbounded.stderr  # the limit is real


def test_large_sets_check_each_file_when_first_read(reference, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    (broken / "train-00002.bin").write_bytes((broken / "train-00002.bin").read_bytes()[:-7])
    with pytest.raises(PipelineError, match=r"train-00002\.bin is truncated"):
        ShardReader(broken)  # a small set: every size is checked on open
    monkeypatch.setattr(ShardReader, "CHECK_ON_OPEN", 2)
    reader = ShardReader(broken)  # many files: none is touched on open
    assert reader[0].shape == (32,) and len(reader._maps) == 1
    with pytest.raises(PipelineError, match=r"train-00002\.bin is truncated"):
        reader[2 * 50 + 3]
    with pytest.raises(PipelineError, match=r"train-00002\.bin is truncated"):
        reader.check_files()


def test_verify_checks_the_index_too(reference, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    index = broken / "train.index.tsv"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:-1]))
    ShardReader(broken)  # opening reads no index
    with pytest.raises(PipelineError, match=r"train\.index\.tsv is corrupted"):
        ShardReader(broken, verify=True)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["splits"]["train"]["index"]["sha256"] = hashlib.sha256(index.read_bytes()).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match=r"shard records for \d+ files"):
        ShardReader(broken, verify=True)  # a consistent but short index is still caught
    manifest["splits"]["train"]["num_shards"] += 1
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="lists .* shard file"):
        ShardReader(broken)


def test_version_1_manifests_are_still_read(reference, tmp_path):
    old = to_version_1(reference, tmp_path / "v1")
    for split in ("train", "validation"):
        new_reader, old_reader = ShardReader(reference, split), ShardReader(old, split, verify=True)
        assert len(old_reader) == len(new_reader) and old_reader.layout.index is None
        everything = np.arange(len(new_reader))
        assert np.array_equal(old_reader.take(everything), new_reader.take(everything))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][1]["file"] = "elsewhere.bin"
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="does not write"):
        ShardReader(old)


def test_small_splits_also_list_their_records_in_the_manifest(tmp_path, monkeypatch):
    """The DESIGN contract (per-shard file/sequences/sha256 in manifest.json) holds up to
    INLINE_RECORDS files per split; beyond that only the index holds them (bounded manifest)."""
    from pipeline.shards import format as shard_format

    monkeypatch.setattr(shard_format, "INLINE_RECORDS", 2)
    for files, listed in ((2, True), (3, False)):
        out = tmp_path / f"set{files}"
        out.mkdir()
        writer = shard_format.ShardFileWriter(out, "train", np.dtype(np.uint16), shard_size=4)
        writer.write(np.arange(8 * 4 * files, dtype=np.uint16).reshape(4 * files, 8))
        keys = writer.close()
        index = (out / "train.index.tsv").read_text().splitlines()
        assert keys["num_shards"] == len(index) == files
        if listed:
            assert [f"{r['file']}\t{r['num_sequences']}\t{r['sha256']}" for r in keys["shards"]] == index
        else:
            assert "shards" not in keys


def test_verify_checks_the_manifest_records_against_the_index(reference, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        PipelineError, match=r"train-00000\.bin in train\.index\.tsv differs from manifest\.json"
    ):
        ShardReader(broken, verify=True)
