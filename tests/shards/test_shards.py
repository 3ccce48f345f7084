"""Tests of ``pipeline shard``: round trip, determinism, resume after a failure or SIGKILL, workers +
merge, bad input; the reader has its own file (tests/shards/test_shard_reader.py).

Run: ``python -m pytest tests/shards/test_shards.py -q`` (``-m "not slow"`` skips the WikiText-2 test).
Small tokenizers are built with ``tokenizers`` (tests/helpers/shards.py); the WikiText-2 test uses
the tokenizer stage.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.cli import main as cli_main
from pipeline.config import ConfigError, from_dict, load_config
from pipeline.errors import PipelineError
from pipeline.shards import ShardReader
from pipeline.shards.encode import split_key, validation_mask
from pipeline.shards.plan import UnitWriter, partition
from pipeline.stages.shard import Config
from pipeline.text import CorpusConfig, iter_documents
from tests.helpers import ROOT
from tests.helpers.shards import CORPUS_DOCS, shard, small_corpus, small_wordpiece, tree_bytes, unpack


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return small_wordpiece(tmp_path_factory.mktemp("tok") / "wordpiece")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    """One uninterrupted single-process run that the other runs must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    shard(corpus, tokenizer_dir, out)
    return out


# ----------------------------------------------------------------------------- writer


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
        assert len(info["shards"]) == math.ceil(info["num_sequences"] / 50)
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


def test_resume_after_injected_failure(reference, corpus, tokenizer_dir, tmp_path, monkeypatch):
    commit = UnitWriter.commit
    calls = {"n": 0}

    def failing_commit(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected failure after 3 units")
        return commit(self)

    monkeypatch.setattr(UnitWriter, "commit", failing_commit)
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="injected"):
        shard(corpus, tokenizer_dir, out)
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
    commit = UnitWriter.commit
    calls = {"n": 0}

    def failing_commit(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected failure after 3 units")
        return commit(self)

    monkeypatch.setattr(UnitWriter, "commit", failing_commit)
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="injected"):
        shard(corpus, tokenizer_dir, out)
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


# ----------------------------------------------------------------------------- errors


def _bad_tokenizer_dir(tmp_path: Path) -> Path:
    (tmp_path / "not_a_tokenizer").mkdir()
    (tmp_path / "not_a_tokenizer" / "vocab.txt").write_text("x\n")
    return tmp_path / "not_a_tokenizer"


@pytest.mark.parametrize(
    "case, overrides, message",
    [
        ("missing input", {"input": ["{tmp}/absent.txt"]}, "input file not found"),
        ("empty input", {"input": ["{tmp}/empty.txt"]}, "input file is empty"),
        ("no tokens", {"input": ["{tmp}/junk.txt"]}, "yields zero tokens"),
        ("tokenizer missing", {"tokenizer": "{tmp}/no_tokenizer"}, "tokenizer: directory not found"),
        ("not a tokenizer", {"tokenizer": "{tmp}/not_a_tokenizer"}, "not a tokenizer directory"),
        ("seq_len too long", {"seq_len": 1024}, "larger than the tokenizer's model_max_length=512"),
        ("seq_len too short", {"seq_len": 4}, "seq_len: must be >= 8"),
        ("val_fraction 1", {"val_fraction": 1.0}, r"val_fraction: must be in \[0, 1\)"),
        ("val_fraction < 0", {"val_fraction": -0.1}, r"val_fraction: must be in \[0, 1\)"),
        ("bad worker", {"num_workers": 2, "worker_index": 2}, "worker_index"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    case, overrides, message, corpus, tokenizer_dir, tmp_path
):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "junk.txt").write_text("\x01\x02\n\x03\n", encoding="utf-8")
    _bad_tokenizer_dir(tmp_path)
    values = {
        k: (
            [v.format(tmp=tmp_path) for v in val]
            if isinstance(val, list)
            else val.format(tmp=tmp_path)
            if isinstance(val, str)
            else val
        )
        for k, val in overrides.items()
    }
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=message):
        shard(values.pop("input", corpus), values.pop("tokenizer", tokenizer_dir), out, **values)
    assert not out.exists()


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    code = cli_main(
        [
            "shard",
            f"input={tmp_path}/absent.txt",
            f"tokenizer={tmp_path}",
            f"output_dir={tmp_path}/o",
            "seq_len=128",
            "val_fraction=0.01",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("error: input file not found")


def test_example_config_loads():
    cfg = load_config(Config, ROOT / "configs" / "shard" / "wikitext2.yaml")
    assert cfg.seq_len == 128 and cfg.input == ["../shared/data/wikitext-2/train.txt"]
    with pytest.raises(ConfigError, match="seq_len"):
        load_config(Config, ROOT / "configs" / "shard" / "wikitext2.yaml", ["seq_lne=64"])


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_wikitext2_8k_wordpiece_seq_len_128(shared_data, tmp_path):
    from pipeline.stages import tokenizer as tokenizer_stage

    train = shared_data / "wikitext-2" / "train.txt"
    tokenizer = tmp_path / "tok"
    tokenizer_stage.run(
        from_dict(
            tokenizer_stage.Config,
            {
                "input": [str(train)],
                "output_dir": str(tokenizer),
                "vocab_size": 8000,
                "model_type": "wordpiece",
            },
        )
    )
    tok = AutoTokenizer.from_pretrained(str(tokenizer)).backend_tokenizer
    manifest = shard(
        [train],
        tokenizer,
        tmp_path / "wt2",
        seq_len=128,
        val_fraction=0.01,
        seed=0,
        shard_size=4096,
        docs_per_unit=5000,
        batch_size=1000,
        num_proc=2,
    )
    texts = list(iter_documents(str(train), CorpusConfig()))
    lengths = [len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    nonempty = [n for n in lengths if n]
    totals = manifest["totals"]
    assert manifest["tokenizer"]["vocab_size"] == 8000 and manifest["dtype"] == "uint16"
    assert totals["documents"] == len(nonempty) > 20_000
    for info in manifest["splits"].values():
        stream = info["num_tokens"] - 2 * info["num_sequences"]
        assert info["num_sequences"] == math.ceil(stream / 126)
        assert sum(s["num_sequences"] for s in info["shards"]) == info["num_sequences"]
    # every real token is a document token, a [SEP] between documents, or a row's [CLS]/[SEP]
    assert totals["tokens"] == sum(nonempty) + (totals["documents"] - 2) + 2 * totals["sequences"]
    assert 0.005 < manifest["splits"]["validation"]["num_documents"] / totals["documents"] < 0.015
    assert (
        len(ShardReader(tmp_path / "wt2", "train", verify=True))
        == manifest["splits"]["train"]["num_sequences"]
    )
