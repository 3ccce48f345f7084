"""Tests of pipeline/text/encoder.py: the shard stage's fast ids equal ``encode_batch_fast`` document by
document for every tokenizer, word mode is used only where that is exact, and a tokenizer directory
reads the same as ``AutoTokenizer`` sees it.

Run: ``python -m pytest tests/text/test_encoder.py -q``.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer

from pipeline.text import IdEncoder, read_tokenizer_dir, save_tokenizer, to_transformers, train_tokenizer
from pipeline.text import encoder as encoder_module
from pipeline.text.encoder import splits_on_spaces

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "Sat", "naïve", "café", "über", "state-of-the-art", "1,234.5", "it's", "日本語"]
# every way a space-separated piece could interact with its neighbours
TRICKY = [
    "",
    " ",
    "   ",
    "a  b   c    d",
    " leading and trailing ",
    "tab\tinside and\t\tmore",
    "nbsp\u00a0joins and ideographic\u3000space",
    "combining \u0301after a space, e\u0301 composed",
    "specials [SEP] inside, [PAD]glued[PAD] and [MASK]x",
    "fullwidth \uff3bPAD\uff3d brackets",  # NFKC makes it [PAD]: a special's id from a plain word
    "control \x01\x02 chars \x00 and \ufffd",
    "emoji 🙂🙂 and 日本語の文 mixed",
    "word" * 40 + " after a very long word",
    "ΣΊΣΥΦΟΣ final sigma Σ",
    "İstanbul ǅ title case",
]


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = WORDS + ["", " ", "\t", ".", "[SEP]", "x[PAD]", "\u00a0"]
    return [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(n)] + TRICKY


def _trained(normalizer, pre_tokenizer) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS)
    tok.train_from_iterator(random_texts(300, seed=1), trainer)
    return tok


WORD_MODE = {
    "bert": lambda: _trained(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()),
    "nfkc-whitespace": lambda: _trained(
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), pre_tokenizers.Whitespace()
    ),
    "nfkc-whitespace-split": lambda: _trained(normalizers.NFKC(), pre_tokenizers.WhitespaceSplit()),
    "whitespace-split-punctuation": lambda: _trained(
        normalizers.NFD(),
        pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]),
    ),
}


def _pipeline_tokenizer(model_type: str) -> Tokenizer:
    tok, _ = train_tokenizer(random_texts(300, seed=2), model_type=model_type, vocab_size=300, progress=False)
    return tok


def _reference(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


def _split(ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    assert ids.dtype == np.uint32 and lengths.sum() == ids.size
    return [part.tolist() for part in np.split(ids, np.cumsum(lengths)[:-1])]


@pytest.mark.parametrize("name", list(WORD_MODE))
@pytest.mark.parametrize("joined_words", [8192, 7])
def test_word_mode_gives_the_ids_of_encoding_each_document(name, joined_words, monkeypatch):
    monkeypatch.setattr(encoder_module, "_JOINED_WORDS", joined_words)  # one joined string, or many
    tok = WORD_MODE[name]()
    encoder = IdEncoder(tok.to_str())
    assert encoder.word_mode and encoder.separator == ("[PAD]", 0)
    texts = random_texts(400, seed=3)
    assert _split(*encoder.encode(texts)) == _reference(tok, texts)
    # a word that holds the separator's text ([PAD]): that batch falls back, same ids
    for text in TRICKY[8:10]:
        assert _split(*encoder.encode([text])) == _reference(tok, [text])


@pytest.mark.parametrize("joined_words", [8192, 7])
def test_word_mode_encodes_each_distinct_word_once_in_joined_strings(joined_words, monkeypatch):
    monkeypatch.setattr(encoder_module, "_JOINED_WORDS", joined_words)
    tok = WORD_MODE["bert"]()
    encoder = IdEncoder(tok.to_str())
    seen: list[list[str]] = []
    original = encoder.tokenizer

    class Recorder:  # the Rust tokenizer's methods are read-only: wrap it to see what it is given
        def encode_batch_fast(self, texts, add_special_tokens):
            seen.append(list(texts))
            return original.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    encoder.tokenizer = Recorder()
    texts = [" ".join(["the", "cat", "sat"] * 50 + [f"w{i}" for i in range(20)])] * 5
    assert _split(*encoder.encode(texts)) == _reference(tok, texts)
    assert len(seen) == 1  # one call: no fallback to encoding word by word
    assert sum(text.count("[PAD]") for text in seen[0]) == 3 + 20  # each distinct word once
    assert len(seen[0]) == -(-23 // joined_words)


def test_without_a_separator_distinct_words_are_encoded_one_by_one():
    tok = WORD_MODE["bert"]()
    spec = json.loads(tok.to_str())
    for token in spec["added_tokens"]:
        token["normalized"] = True  # matched after normalization: cannot split a joined string reliably
    encoder = IdEncoder(json.dumps(spec))
    assert encoder.word_mode and encoder.separator is None
    texts = random_texts(100, seed=4)
    assert _split(*encoder.encode(texts)) == _reference(Tokenizer.from_str(json.dumps(spec)), texts)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_tokenizers_that_keep_spaces_are_encoded_document_by_document(model_type):
    tok = _pipeline_tokenizer(model_type)
    encoder = IdEncoder(tok.to_str())
    assert not encoder.word_mode
    texts = random_texts(200, seed=5)
    assert _split(*encoder.encode(texts)) == _reference(tok, texts)
    # the guard matters: forcing word mode on these tokenizers changes the ids
    encoder.word_mode, encoder.separator = True, None
    assert _split(*encoder.encode(texts)) != _reference(tok, texts)


def test_eligibility_rule():
    bert = json.loads(WORD_MODE["bert"]().to_str())
    assert splits_on_spaces(bert)
    for change in (
        {"normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": ""}},
        {
            "normalizer": {
                "type": "Sequence",
                "normalizers": [{"type": "Precompiled", "precompiled_charsmap": ""}],
            }
        },
        {"pre_tokenizer": {"type": "Punctuation", "behavior": "Isolated"}},  # keeps spaces
        {"pre_tokenizer": None},
        {"added_tokens": bert["added_tokens"] + [{"id": 300, "content": "new york", "special": False}]},
    ):
        assert not splits_on_spaces({**bert, **change}), change
    assert not IdEncoder(json.dumps(bert), by_words=False).word_mode


def test_an_empty_batch():
    ids, lengths = IdEncoder(WORD_MODE["bert"]().to_str()).encode([])
    assert ids.size == 0 and lengths.size == 0


@pytest.mark.parametrize("model_type", ["wordpiece", "bpe", "unigram"])
def test_tokenizer_dir_reads_as_auto_tokenizer_sees_it(model_type, tmp_path):
    tok = _pipeline_tokenizer(model_type)
    directory = save_tokenizer(to_transformers(tok, model_type, model_max_length=256), tmp_path / model_type)
    files = read_tokenizer_dir(directory)
    auto = AutoTokenizer.from_pretrained(str(directory))
    assert files.vocab_size == len(auto) and files.model_max_length == 256
    for role in ("pad", "unk", "cls", "sep", "mask"):
        assert files.special_ids[f"{role}_id"] == getattr(auto, f"{role}_token_id"), role
    texts = random_texts(50, seed=6)
    ours = _split(*IdEncoder(files.tokenizer_json).encode(texts))
    assert ours == [auto(t, add_special_tokens=False)["input_ids"] for t in texts]
