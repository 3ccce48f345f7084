"""Tests of ``pipeline shard``'s inputs: bad input is one clear error and writes nothing, the CLI
reports it in one line, no ``transformers`` import, hub corpora are streamed, the shipped config,
and the WikiText-2 run (``-m "not slow"`` skips it; it trains its tokenizer with the tokenizer stage).

Run: ``python -m pytest tests/shards/test_shard_inputs.py -q``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.cli import main as cli_main
from pipeline.config import ConfigError, from_dict, load_config
from pipeline.errors import PipelineError
from pipeline.shards import ShardReader
from pipeline.stages.shard import Config
from pipeline.text import CorpusConfig, iter_documents
from tests.helpers import ROOT
from tests.helpers.shards import shard

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
        (
            "broken tokenizer.json",
            {"tokenizer": "{tmp}/broken_tokenizer"},
            "tokenizer: cannot load a tokenizer",
        ),
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
    (tmp_path / "broken_tokenizer").mkdir()
    (tmp_path / "broken_tokenizer" / "tokenizer.json").write_text('{"model": {"type": "Nope"}}')
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


def test_the_shard_stage_does_not_import_transformers(corpus, tokenizer_dir, tmp_path):
    """Importing transformers costs seconds per run; the encoder needs only ``tokenizers``."""
    code = "import sys; from pipeline.cli import main; code = main(sys.argv[1:]); print(sorted(sys.modules))"
    args = [f"input={json.dumps([str(p) for p in corpus])}", f"tokenizer={tokenizer_dir}"]
    args += [f"output_dir={tmp_path / 's'}", "seq_len=32", "val_fraction=0.2", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "shard", *args], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    modules = proc.stdout.strip().splitlines()[-1]
    assert "'tokenizers'" in modules and "'transformers'" not in modules and "'torch'" not in modules


def test_hub_datasets_are_streamed(corpus, tokenizer_dir, tmp_path, monkeypatch):
    """A hub corpus is read row by row from ``load_dataset(..., streaming=True)``: it never lands
    whole in the datasets cache; the shards equal those of the same documents in a local file."""
    import datasets

    texts = corpus[0].read_text(encoding="utf-8").splitlines()
    calls = []

    class Rows:  # iteration only: no len(), no indexing, nothing to materialise
        def __iter__(self):
            return ({"text": text} for text in texts)

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return Rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = shard(["hf://someone/corpus"], tokenizer_dir, tmp_path / "hub", val_fraction=0.0)
    local = shard([corpus[0]], tokenizer_dir, tmp_path / "local", val_fraction=0.0)
    assert calls == [("someone/corpus", None, "train", True)]
    assert hub["splits"]["train"]["index"] == local["splits"]["train"]["index"]  # same shard files
    assert hub["inputs"] == [{"name": "hf://someone/corpus", "bytes": 0}]


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
        index = (tmp_path / "wt2" / info["index"]["file"]).read_text().splitlines()
        assert len(index) == info["num_shards"]
        assert sum(int(line.split("\t")[1]) for line in index) == info["num_sequences"]
        assert 5 < info["unigram_entropy"] < math.log(8000) and 0.01 < info["top_token_fraction"] < 0.2
    # every real token is a document token, a [SEP] between documents, or a row's [CLS]/[SEP]
    assert totals["tokens"] == sum(nonempty) + (totals["documents"] - 2) + 2 * totals["sequences"]
    assert 0.005 < manifest["splits"]["validation"]["num_documents"] / totals["documents"] < 0.015
    assert (
        len(ShardReader(tmp_path / "wt2", "train", verify=True))
        == manifest["splits"]["train"]["num_sequences"]
    )
