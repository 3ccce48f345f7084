"""Token ids of many documents at once, fast: the shard stage's encoder (no ``transformers``, no offsets).

Used in every encoding process of ``pipeline shard`` (:mod:`pipeline.shards.encode`)::

    files = read_tokenizer_dir("runs/tokenizer")            # tokenizer.json + tokenizer_config.json
    encoder = IdEncoder(files.tokenizer_json)
    ids, lengths = encoder.encode(["first document", "the second"])  # flat uint32 ids, tokens per text

The ids are exactly those of ``Tokenizer.encode_batch_fast(texts, add_special_tokens=False)``, one
document at a time; what changes is how much work the Rust encoder does to get them.

Word mode.  When the pre-tokenizer drops spaces (``BertPreTokenizer``, ``Whitespace``,
``WhitespaceSplit``), the normalizer works character by character (``BertNormalizer``, ``Lowercase``,
``NFC/NFD/NFKC/NFKD``, ``StripAccents``) and no added token contains whitespace, nothing the encoder
does crosses an ASCII space: a document's ids are the concatenation of the ids of its
``text.split(" ")`` pieces ("words").  Natural text repeats its words (WikiText-2: a batch of 4000
documents, the shard stage's default, has 18 words per distinct word; 9 at 1000 documents), so
each distinct word of a batch is encoded once and the batch's ids are gathered from those with
numpy.  There is no state across batches, so a corpus that repeats itself further apart than a
batch gains nothing from it.

Joined words.  One ``Encoding`` per distinct word would cost more than the word (ids, tokens,
offsets, masks...), so the distinct words are encoded as a few long strings, joined by a special
token that the encoder splits out before normalizing (``normalized: false``, no strip flags,
sharing no characters at its ends with another added token): ``w1[PAD]w2[PAD]...``.  The separator's ids mark
the words' ends.  If a word contains the separator's text, or the count of separators in the ids is
off, that batch's distinct words are encoded one by one instead - the same ids, more slowly.

Any other tokenizer (byte-level BPE and Metaspace keep spaces inside tokens; ``Replace`` or
``Precompiled`` normalizers may act across them) is encoded document by document.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain, count, repeat
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

__all__ = ["IdEncoder", "TokenizerFiles", "read_tokenizer_dir", "splits_on_spaces"]

SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")
_PER_CHAR_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
_SPACE_DROPPING = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_LOCAL_SPLITTERS = _SPACE_DROPPING | {"Punctuation", "Digits"}
_NO_LIMIT = int(1e30)  # transformers' "no model_max_length"
_JOINED_WORDS = 8192  # distinct words per joined string


@dataclass(frozen=True)
class TokenizerFiles:
    """What a tokenizer directory says, read with ``tokenizers`` alone (no ``transformers`` import)."""

    tokenizer_json: str
    vocab_size: int  # including added tokens
    special_ids: dict[str, int | None]  # "pad_id", "unk_id", "cls_id", "sep_id", "mask_id"
    model_max_length: int


def read_tokenizer_dir(directory: str | Path) -> TokenizerFiles:
    """Read ``tokenizer.json`` and the special tokens / max length of ``tokenizer_config.json``
    (``special_tokens_map.json`` fills roles the config leaves out), as ``AutoTokenizer`` would."""
    from tokenizers import Tokenizer

    directory = Path(directory)
    try:
        text = (directory / "tokenizer.json").read_text(encoding="utf-8")
        tokenizer = Tokenizer.from_str(text)
    except Exception as e:  # a broken tokenizer.json surfaces as several exception types
        raise PipelineError(f"cannot load a tokenizer from {directory} ({type(e).__name__}: {e})") from None
    config = _json_file(directory / "tokenizer_config.json")
    mapping = _json_file(directory / "special_tokens_map.json")
    special_ids = {}
    for role in SPECIAL_ROLES:
        token = config.get(f"{role}_token") or mapping.get(f"{role}_token")
        content = token.get("content") if isinstance(token, dict) else token
        special_ids[f"{role}_id"] = tokenizer.token_to_id(content) if isinstance(content, str) else None
    return TokenizerFiles(
        tokenizer_json=text,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        special_ids=special_ids,
        model_max_length=int(config.get("model_max_length") or _NO_LIMIT),
    )


def _json_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path} is not valid JSON ({e})") from None
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------- eligibility


def _per_char(normalizer: dict | None) -> bool:
    if normalizer is None:
        return True
    if normalizer.get("type") == "Sequence":
        return all(_per_char(step) for step in normalizer.get("normalizers", []))
    return normalizer.get("type") in _PER_CHAR_NORMALIZERS


def _drops_spaces(pre_tokenizer: dict | None) -> bool:
    if pre_tokenizer is None:
        return False
    steps = (
        pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    )
    kinds = [step.get("type") for step in steps]
    return all(kind in _LOCAL_SPLITTERS for kind in kinds) and any(kind in _SPACE_DROPPING for kind in kinds)


def splits_on_spaces(spec: dict[str, Any]) -> bool:
    """Whether a tokenizer (its ``tokenizer.json`` as a dict) encodes a text as the concatenation
    of its space-separated pieces (word mode, see the module docstring)."""
    model = spec.get("model") or {}
    added = spec.get("added_tokens") or []
    return (
        _per_char(spec.get("normalizer"))
        and _drops_spaces(spec.get("pre_tokenizer"))
        and model.get("dropout") is None
        and not any(ch.isspace() for token in added for ch in token.get("content", ""))
    )


def _overlaps(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` could match overlapping text: one contains the other, or an end of
    one is a start of the other."""
    if a in b or b in a:
        return True
    return any(a.endswith(b[:n]) or b.endswith(a[:n]) for n in range(1, min(len(a), len(b))))


def _separator(spec: dict[str, Any]) -> tuple[str, int] | None:
    """(content, id) of a special token that can join words into one string (module docstring)."""
    added = spec.get("added_tokens") or []
    for token in sorted(added, key=lambda t: t["id"]):
        content = token.get("content", "")
        usable = token.get("special") and not any(
            token.get(flag) for flag in ("normalized", "lstrip", "rstrip", "single_word")
        )
        if (
            usable
            and content
            and not any(_overlaps(content, other.get("content", "")) for other in added if other is not token)
        ):
            return content, int(token["id"])
    return None


# ----------------------------------------------------------------------------- encoding


class IdEncoder:
    """``encode(texts) -> (ids, lengths)``: every text's ids, concatenated, and their counts.
    ``by_words=False`` encodes document by document whatever the tokenizer (same ids, slower)."""

    def __init__(self, tokenizer_json: str, by_words: bool = True) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        spec = json.loads(tokenizer_json)
        self.word_mode = by_words and splits_on_spaces(spec)
        self.separator = _separator(spec) if self.word_mode else None

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 ids of all texts in order, int64 number of ids per text)."""
        if not texts:
            return np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.int64)
        return self._by_words(texts) if self.word_mode else self._one_by_one(texts)

    def _one_by_one(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.fromiter(chain.from_iterable(ids), dtype=np.uint32, count=int(lengths.sum())), lengths

    def _by_words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # joining with one space and splitting on it gives every text's pieces, in order
        words = " ".join(texts).split(" ")
        words_per_text = np.fromiter(map(str.count, texts, repeat(" ")), dtype=np.int64, count=len(texts)) + 1
        # each word -> its rank among the distinct words, in one C-level pass (a missing key takes the
        # counter's next value)
        code_of: defaultdict[str, int] = defaultdict(count().__next__)
        codes = np.fromiter(map(code_of.__getitem__, words), dtype=np.int64, count=len(words))
        distinct_ids, distinct_lengths = self._distinct(list(code_of))
        lengths = distinct_lengths[codes]  # ids per word occurrence
        # gather: occurrence k's ids are distinct_ids[start[codes[k]] : ... + lengths[k]]
        sources = np.cumsum(distinct_lengths) - distinct_lengths
        targets = np.cumsum(lengths) - lengths
        gather = np.arange(int(lengths.sum())) + np.repeat(sources[codes] - targets, lengths)
        text_starts = np.cumsum(words_per_text) - words_per_text
        return distinct_ids[gather], np.add.reduceat(lengths, text_starts)

    def _distinct(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of distinct words: joined strings (several, so that the Rust encoder's threads,
        where enabled, share them) where that is exact, else one by one."""
        if self.separator is None:
            return self._one_by_one(words)
        content, separator_id = self.separator
        groups = [words[start : start + _JOINED_WORDS] for start in range(0, len(words), _JOINED_WORDS)]
        joined = [content.join(group) + content for group in groups]
        if any(text.count(content) != len(group) for text, group in zip(joined, groups)):
            return self._one_by_one(words)  # a word holds the separator's text
        encodings = self.tokenizer.encode_batch_fast(joined, add_special_tokens=False)
        ids = np.concatenate([np.array(encoding.ids, dtype=np.uint32) for encoding in encodings])
        ends = np.flatnonzero(ids == separator_id)
        if len(ends) != len(words):  # a word encoded to the separator's id
            return self._one_by_one(words)
        return ids[ids != separator_id], np.diff(ends, prepend=-1) - 1
