"""Tests for pipeline/text/tokenizer.py and the ``pipeline tokenizer`` stage (CLI end to end)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import AutoTokenizer

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.stages.tokenizer import Config
from pipeline.text import SPECIALS, save_tokenizer, to_transformers, train_tokenizer, word_continuation_table
from tests.helpers import ROOT

MODEL_TYPES = ["wordpiece", "bpe", "unigram"]
EXPECTED_IDS = {
    "wordpiece": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
    "bpe": {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4},
    "unigram": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
}
SAMPLE = "the merin kotasa vulo pemira"
PAIR = ("lomi tasuke", "viru nopa sole")


def synthetic_documents(n_docs: int = 1500, seed: int = 0) -> list[str]:
    """Lowercase sentences over a Zipf-distributed vocabulary of made-up words."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "mi", "ra", "su", "ne", "lo", "vi", "pe", "ru", "sa", "ko", "ta", "me", "no"]
    words = ["the", "and", "of"] + [
        "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)
    ]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(5, 20))) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("\n".join(synthetic_documents()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory) -> dict[str, Path]:
    """model_type -> directory of a tokenizer trained on the synthetic corpus and saved."""
    dirs = {}
    for model_type in MODEL_TYPES:
        tok, count = train_tokenizer(
            synthetic_documents(), model_type=model_type, vocab_size=400, progress=False
        )
        assert count == 1500
        dirs[model_type] = tmp_path_factory.mktemp(model_type) / "tok"
        save_tokenizer(to_transformers(tok, model_type, model_max_length=128), dirs[model_type])
    return dirs


@pytest.fixture(params=MODEL_TYPES)
def saved(request, saved_dirs) -> tuple[str, Path]:
    return request.param, saved_dirs[request.param]


def test_auto_tokenizer_loads_with_specials_and_max_length(saved):
    model_type, out = saved
    tok = AutoTokenizer.from_pretrained(out)
    ids = EXPECTED_IDS[model_type]
    specials = SPECIALS[model_type]
    assert tok.model_max_length == 128
    for role, expected in ids.items():
        assert getattr(tok, f"{role}_token") == getattr(specials, role)
        assert getattr(tok, f"{role}_token_id") == expected
    assert 300 < len(tok) <= 400


def test_encode_decode_round_trip(saved):
    tok = AutoTokenizer.from_pretrained(saved[1])
    ids = tok(SAMPLE)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == SAMPLE


def test_cls_sep_and_token_types_for_single_and_pair(saved):
    tok = AutoTokenizer.from_pretrained(saved[1])
    cls, sep = tok.cls_token_id, tok.sep_token_id
    single = tok(SAMPLE)
    assert single["input_ids"][0] == cls and single["input_ids"][-1] == sep
    assert single["input_ids"].count(sep) == 1 and set(single["token_type_ids"]) == {0}

    pair = tok(*PAIR)
    ids, types = pair["input_ids"], pair["token_type_ids"]
    first_sep = ids.index(sep)
    assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert tok.decode(ids[1:first_sep]) == PAIR[0]
    assert tok.decode(ids[first_sep + 1 : -1]).strip() == PAIR[1]


def test_word_continuation_table_rebuilds_words(saved):
    model_type, out = saved
    tok = AutoTokenizer.from_pretrained(out)
    table = word_continuation_table(tok)
    assert table.dtype == np.bool_ and len(table) == len(tok)
    assert not table[tok.all_special_ids].any()
    marker = {"wordpiece": "##", "bpe": "Ġ", "unigram": "▁"}[model_type]
    for token, index in tok.get_vocab().items():
        if index in tok.all_special_ids:
            continue
        starts_with_marker = token.startswith(marker)
        assert table[index] == (starts_with_marker if model_type == "wordpiece" else not starts_with_marker)
    # grouping tokens by the table gives back the words (a token after a special starts a word)
    ids = tok(SAMPLE)["input_ids"]
    specials = set(tok.all_special_ids)
    words = sum(
        1 for prev, cur in zip(ids, ids[1:]) if cur not in specials and (prev in specials or not table[cur])
    )
    assert words == len(SAMPLE.split())


def test_word_continuation_table_accepts_a_raw_tokenizers_object():
    tok, _ = train_tokenizer(synthetic_documents(200), vocab_size=120, progress=False)
    table = word_continuation_table(tok)
    assert table[tok.token_to_id("[CLS]")] == False  # noqa: E712
    assert table.sum() == sum(t.startswith("##") for t in tok.get_vocab())


def test_saved_dirs_load_without_the_project(saved_dirs, tmp_path):
    # a fresh interpreter outside the repo, with nothing of `pipeline` importable
    dirs = [str(saved_dirs[t]) for t in MODEL_TYPES]
    code = (
        "import sys; from transformers import AutoTokenizer; "
        f"print([AutoTokenizer.from_pretrained(d).mask_token_id for d in {dirs!r}]); "
        "assert 'pipeline' not in sys.modules"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[4, 4, 4]"
    for directory in dirs:
        config = json.loads((Path(directory) / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_empty_stream_is_an_error():
    with pytest.raises(PipelineError, match="no documents"):
        train_tokenizer(iter([]), vocab_size=100, progress=False)


# ----------------------------------------------------------------------------- atomic output


def _small_fast_tokenizer(docs: list[str]):
    tok, _ = train_tokenizer(docs, vocab_size=100, progress=False)
    return to_transformers(tok, "wordpiece")


def test_existing_output_is_replaced_only_when_the_new_one_is_complete(tmp_path, monkeypatch):
    out = tmp_path / "tok"
    save_tokenizer(_small_fast_tokenizer(synthetic_documents(100)), out)
    before = (out / "tokenizer.json").read_bytes()
    fast = _small_fast_tokenizer(synthetic_documents(100, seed=1))

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fast, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_tokenizer(fast, out)
    assert (out / "tokenizer.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no partial or retired dirs left

    monkeypatch.undo()
    save_tokenizer(fast, out)
    assert (out / "tokenizer.json").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_refuses_to_replace_a_directory_that_is_not_a_tokenizer(tmp_path):
    (tmp_path / "precious.txt").write_text("data")
    with pytest.raises(PipelineError, match="not empty and holds no tokenizer"):
        save_tokenizer(_small_fast_tokenizer(synthetic_documents(50)), tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "data"


# ----------------------------------------------------------------------------- stage / CLI


def _write_config(tmp_path: Path, corpus_file: Path, **extra) -> Path:
    config = {"input": [str(corpus_file)], "output_dir": str(tmp_path / "out"), "model_type": "wordpiece"}
    config.update(extra)
    path = tmp_path / "tok.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_cli_end_to_end_writes_tokenizer_and_resolved_config(tmp_path, corpus_file, capsys):
    config = _write_config(tmp_path, corpus_file, corpus={"doc_boundary": "line"})
    assert main(["tokenizer", "--config", str(config), "vocab_size=300", "max_documents=1000"]) == 0
    out = tmp_path / "out"
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["vocab_size"] == 300 and resolved["max_documents"] == 1000
    assert resolved["corpus"]["text_field"] == "text"
    assert len(AutoTokenizer.from_pretrained(out)) == 300
    assert "1,000 documents" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ("vocab_sise=300", "unknown config key 'vocab_sise'"),
        ("vocab_size=3", "vocab_size: wordpiece needs at least"),
        ("model_type=bpe vocab_size=261", "vocab_size: bpe needs at least 262"),
        ("model_type=sentencepiece", "model_type"),
        ("corpus.max_line_bytes=0", "corpus.max_line_bytes"),
    ],
)
def test_cli_config_errors_exit_2(tmp_path, corpus_file, capsys, override, message):
    config = _write_config(tmp_path, corpus_file, vocab_size=300)
    assert main(["tokenizer", "--config", str(config), *override.split()]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_missing_input_exits_2_and_writes_nothing(tmp_path, corpus_file, capsys):
    config = _write_config(tmp_path, corpus_file, vocab_size=300)
    assert main(["tokenizer", "--config", str(config), f"input=[{tmp_path / 'nope.txt'}]"]) == 2
    assert "input file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "tokenizer").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_are_valid(path):
    cfg = load_config(Config, path)
    assert cfg.vocab_size > 0 and cfg.input


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_wordpiece_8k_on_wikitext2(shared_data, tmp_path):
    out = tmp_path / "wt2"
    argv = [
        "tokenizer",
        "--config",
        str(ROOT / "configs" / "tokenizer" / "wikitext2_wordpiece.yaml"),
        f"input=[{shared_data / 'wikitext-2' / 'train.txt'}]",
        f"output_dir={out}",
    ]
    assert main(argv) == 0
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 8000
    for word in ["the", "game", "first", "city", "season", "album", "war", "american"]:
        assert tok.tokenize(word) == [word], word
    pieces = tok.tokenize("zorblaxian")  # an unseen word splits into known pieces
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])
    lines = (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines()[:300]
    ids = [i for line in lines if line.strip() for i in tok(line)["input_ids"]]
    assert ids.count(tok.unk_token_id) / len(ids) < 0.01
