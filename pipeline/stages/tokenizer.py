"""Train a WordPiece, byte-level BPE or Unigram tokenizer on a text corpus.

Run: ``pipeline tokenizer --config configs/tokenizer/wikitext2_wordpiece.yaml [key=value ...]``.
The corpus is streamed (see ``pipeline/text/corpus.py`` for input formats); ``output_dir`` becomes a
directory that ``transformers.AutoTokenizer.from_pretrained`` loads, plus the resolved
``config.yaml``.  The work lives in ``pipeline/text/tokenizer.py``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline import console
from pipeline.config import REQUIRED, option, section
from pipeline.errors import ConfigError
from pipeline.text import (
    SPECIALS,
    CorpusConfig,
    check_output_dir,
    iter_corpus,
    resolve_inputs,
    save_tokenizer,
    to_transformers,
    train_tokenizer,
)

_BYTE_ALPHABET = 256


@dataclass
class Config:
    """Configuration of ``pipeline tokenizer``."""

    input: list[str] = option(REQUIRED, "training text: files, globs, directories or hub dataset names")
    output_dir: str = option(REQUIRED, "directory to write the tokenizer to (replaced atomically)")
    vocab_size: int = option(REQUIRED, "target vocabulary size, special tokens included")
    model_type: Literal["wordpiece", "bpe", "unigram"] = option(
        "wordpiece", "wordpiece (BERT), bpe (byte-level, RoBERTa) or unigram (SentencePiece style)"
    )
    lowercase: bool = option(True, "lowercase text before tokenizing (wordpiece also strips accents)")
    min_frequency: int = option(2, "minimum count for a merge / word piece (wordpiece and bpe only)")
    limit_alphabet: int | None = option(
        1000, "wordpiece: keep at most this many initial characters (rarer ones become [UNK])"
    )
    model_max_length: int = option(512, "longest sequence the saved tokenizer allows (model_max_length)")
    max_documents: int | None = option(None, "train on at most this many documents (null = all)")
    batch_size: int = option(1000, "documents handed to the trainer per batch")
    corpus: CorpusConfig = section(CorpusConfig, "how input files are read")

    def validate(self) -> None:
        floor = len(SPECIALS[self.model_type].order) + 1
        if self.model_type == "bpe":
            floor += _BYTE_ALPHABET  # byte-level BPE starts from all 256 bytes
        if self.vocab_size < floor:
            raise ConfigError(f"vocab_size: {self.model_type} needs at least {floor}, got {self.vocab_size}")
        for key in ("min_frequency", "batch_size", "model_max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("limit_alphabet", "max_documents"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
        if not self.output_dir:
            raise ConfigError("output_dir: must not be empty")


def is_complete(cfg: Config) -> bool:
    """The tokenizer and the resolved config are written (the directory is swapped in whole)."""
    out = Path(cfg.output_dir)
    return (out / "tokenizer.json").is_file() and (out / "config.yaml").is_file()


def run(cfg: Config) -> int:
    sources = resolve_inputs(cfg.input)
    check_output_dir(cfg.output_dir)  # fail before training, not after
    start = time.perf_counter()
    documents = iter_corpus(sources, cfg.corpus)
    if cfg.max_documents is not None:
        documents = itertools.islice(documents, cfg.max_documents)
    tok, count = train_tokenizer(
        documents,
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        lowercase=cfg.lowercase,
        min_frequency=cfg.min_frequency,
        limit_alphabet=cfg.limit_alphabet,
        batch_size=cfg.batch_size,
        length=cfg.max_documents,
    )
    save_tokenizer(to_transformers(tok, cfg.model_type, cfg.model_max_length), cfg.output_dir, cfg)
    vocab = tok.get_vocab_size()
    note = f" (asked {cfg.vocab_size}: the corpus supports no more)" if vocab < cfg.vocab_size else ""
    console.info(
        f"tokenizer: {cfg.model_type}, vocab {vocab}{note}, {count:,} documents from {len(sources)} "
        f"input(s), {time.perf_counter() - start:.1f}s -> {cfg.output_dir}"
    )
    return 0
