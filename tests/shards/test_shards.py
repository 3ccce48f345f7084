"""Tests of ``pipeline shard``'s output: round trip, token statistics, determinism, reruns, resume
after a failure or SIGKILL, workers + merge.  Bad input, hub inputs and the real-data run are in
tests/shards/test_shard_inputs.py; the reader has its own file (tests/shards/test_shard_reader.py).

Run: ``python -m pytest tests/shards/test_shards.py -q``.  Small tokenizers are built with
``tokenizers`` (tests/helpers/shards.py, fixtures in tests/shards/conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.errors import PipelineError
from pipeline.shards import ShardReader
from pipeline.shards.encode import split_key, validation_mask
from pipeline.shards.plan import UnitWriter, partition
from pipeline.text import CorpusConfig, iter_documents
from tests.helpers import ROOT
from tests.helpers.shards import CORPUS_DOCS, shard, to_version_1, tree_bytes, unpack


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    """One uninterrupted single-process run that the other runs must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    shard(corpus, tokenizer_dir, out)
    return out


# ----------------------------------------------------------------------------- writer


def _hand_statistics(docs: list[list[int]]) -> tuple[float, float]:
    """Unigram entropy (nats) and top token share of the documents' tokens, specials (ids 0-4) excluded."""
    counts = Counter(token for doc in docs for token in doc if token > 4)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return entropy, max(counts.values()) / total


def test_round_trip_packing_and_split(reference, corpus, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    manifest = json.loads((reference / "manifest.json").read_text())
    expected, texts_of = {"train": [], "validation": []}, {"train": [], "validation": []}
    for path in corpus:
        texts = list(iter_documents(str(path), CorpusConfig()))
        is_val = validation_mask(split_key(3, path.name), 0, len(texts), 0.2)
        for text, val in zip(texts, is_val):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if ids:
                expected["validation" if val else "train"].append(ids)
                texts_of["validation" if val else "train"].append(text)
    assert 0.1 < len(expected["validation"]) / sum(map(len, expected.values())) < 0.3
    for split, docs in expected.items():
        reader = ShardReader(reference, split, verify=True)
        assert unpack(reader) == docs
        assert [tok.decode(d) for d in unpack(reader)] == texts_of[split]  # detokenized == input text
        info = manifest["splits"][split]
        stream = sum(map(len, docs)) + len(docs) - 1
        assert info["num_documents"] == len(docs)
        assert info["num_sequences"] == len(reader) == math.ceil(stream / (32 - 2))
        assert info["num_tokens"] == stream + 2 * info["num_sequences"]
        assert info["num_shards"] == math.ceil(info["num_sequences"] / 50) and info["shard_size"] == 50
        index = (reference / info["index"]["file"]).read_text().splitlines()
        assert [line.split("\t")[:2] for line in index] == [
            [f"{split}-{i:05d}.bin", str(min(50, info["num_sequences"] - 50 * i))]
            for i in range(info["num_shards"])
        ]
        assert _hand_statistics(docs) == pytest.approx(
            (info["unigram_entropy"], info["top_token_fraction"]), abs=1e-8
        )
    assert manifest["totals"]["documents"] == sum(map(len, expected.values()))
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == len(tok)
    assert (reference / "tokenizer" / "tokenizer.json").read_bytes() == (
        tokenizer_dir / "tokenizer.json"
    ).read_bytes()
    assert not (reference / "parts").exists() and (reference / "config.yaml").is_file()


def test_deterministic_across_processes_and_units(reference, corpus, tokenizer_dir, tmp_path):
    # a spawned pool of 2 encoders, other unit and batch sizes: still byte-identical
    shard(corpus, tokenizer_dir, tmp_path / "b", num_proc=2, docs_per_unit=37, batch_size=5)
    assert tree_bytes(tmp_path / "b") == tree_bytes(reference)


def test_rerun_of_complete_set_is_a_noop(reference, corpus, tokenizer_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*")}
    shard(corpus, tokenizer_dir, reference)
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*")} == before


def test_a_set_in_an_older_format_is_rewritten(reference, corpus, tokenizer_dir, tmp_path, capsys):
    old = to_version_1(reference, tmp_path / "old")
    shard(corpus, tokenizer_dir, old)
    assert "already complete" not in capsys.readouterr().out
    assert tree_bytes(old) == tree_bytes(reference)


def fail_after_three_units(monkeypatch, corpus, tokenizer_dir, out) -> dict:
    """Run the shard stage into ``out`` with the 4th unit commit failing; returns the commit
    counter (set ``["n"]`` to count the units a rerun encodes)."""
    commit = UnitWriter.commit
    calls = {"n": 0}

    def failing_commit(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected failure after 3 units")
        return commit(self)

    monkeypatch.setattr(UnitWriter, "commit", failing_commit)
    with pytest.raises(RuntimeError, match="injected"):
        shard(corpus, tokenizer_dir, out)
    return calls


def test_resume_after_injected_failure(reference, corpus, tokenizer_dir, tmp_path, monkeypatch):
    out = tmp_path / "s"
    calls = fail_after_three_units(monkeypatch, corpus, tokenizer_dir, out)
    assert not (out / "manifest.json").exists() and not list(out.glob("*.bin"))
    assert len(list((out / "parts" / "units").glob("f*-c*.json"))) == 3
    assert not list(out.rglob("*.tmp"))  # the unit in flight left nothing behind

    calls["n"] = -1000  # no more failures; count the units the rerun encodes
    shard(corpus, tokenizer_dir, out)
    units = sum(math.ceil(docs / 64) for docs in CORPUS_DOCS)  # docs_per_unit=64
    assert calls["n"] == -1000 + units - 3
    assert tree_bytes(out) == tree_bytes(reference)


def test_corrupted_unit_is_re_encoded_on_resume(reference, corpus, tokenizer_dir, tmp_path, monkeypatch):
    """A complete unit whose data no longer matches its recorded sha256 (same size: bit rot, a torn
    write) is not reused: the rerun encodes it again and the output is byte-identical."""
    out = tmp_path / "s"
    calls = fail_after_three_units(monkeypatch, corpus, tokenizer_dir, out)
    unit = sorted((out / "parts" / "units").glob("f*-c*.train.bin"))[1]
    data = bytearray(unit.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, size unchanged
    unit.write_bytes(bytes(data))

    calls["n"] = -1000  # no more failures; count the units the rerun encodes
    shard(corpus, tokenizer_dir, out)
    units = sum(math.ceil(docs / 64) for docs in CORPUS_DOCS)  # docs_per_unit=64
    assert calls["n"] == -1000 + units - 2  # the 2 intact units reused, the corrupted one re-encoded
    assert tree_bytes(out) == tree_bytes(reference)


SLOW_RUN = """
import sys, time
import pipeline.shards.encode as enc
real = enc.encode_task
def slow(task):
    time.sleep(0.05)
    return real(task)
enc.encode_task = slow
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill(reference, corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "s"
    args = [
        "shard",
        f"input={json.dumps([str(p) for p in corpus])}",
        f"tokenizer={tokenizer_dir}",
        f"output_dir={out}",
        "seq_len=32",
        "val_fraction=0.2",
        "seed=3",
        "shard_size=50",
        "docs_per_unit=64",
        "batch_size=16",
        "num_proc=1",
        "progress=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], env=env, cwd=tmp_path)
    units = out / "parts" / "units"
    deadline = time.monotonic() + 120
    while len(list(units.glob("f*-c*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    shard(corpus, tokenizer_dir, out)
    assert tree_bytes(out) == tree_bytes(reference)


def test_workers_and_merge_equal_single_process(reference, corpus, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "w"
    assert partition([5, 1, 3], 2) == [[0], [1, 2]]
    assert shard(corpus, tokenizer_dir, out, num_workers=2, worker_index=0) is None
    assert not (out / "manifest.json").exists()
    with pytest.raises(PipelineError, match=r"part1\.txt has not been encoded.*worker_index=1"):
        shard(corpus, tokenizer_dir, out, num_workers=2, merge=True)
    manifest = shard(corpus, tokenizer_dir, out, num_workers=2, worker_index=1)  # the last one merges
    assert manifest is not None
    assert tree_bytes(out) == tree_bytes(reference)


def test_explicit_merge_and_shard_size_mb(reference, corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "m"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "merge.lock").touch()  # as if another worker were merging: nobody merges
    for worker in range(3):
        assert shard(corpus, tokenizer_dir, out, num_workers=3, worker_index=worker) is None
    shard(corpus, tokenizer_dir, out, num_workers=3, merge=True, shard_size_mb=(50 * 32 * 2 + 10) / 2**20)
    assert tree_bytes(out) == tree_bytes(reference)  # 50 rows of 32 uint16 = shard_size 50
