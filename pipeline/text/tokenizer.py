"""Train and save a subword tokenizer that ``transformers.AutoTokenizer`` loads on its own.

Library behind ``pipeline tokenizer --config FILE`` (see ``pipeline/stages/tokenizer.py``); where
words start in each model type's vocabulary is :mod:`pipeline.text.word_boundaries`.

Three model types, all built with HF ``tokenizers`` and trained from a stream of documents:

* ``wordpiece`` (BERT): BERT normalizer (optional lowercasing + accent stripping) and
  pre-tokenizer, ``##`` continuation prefix, specials ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4).
* ``bpe`` (RoBERTa): byte-level BPE, never an unknown byte, specials ``<s> <pad> </s> <unk> <mask>``
  (ids 0-4); the first word of a text has no ``Ġ`` space marker (RoBERTa's convention).
* ``unigram`` (SentencePiece): NFKC normalization, Metaspace ``▁`` word marker, BERT specials.

Every type gets the BERT post-processor: ``CLS A SEP`` for one text, ``CLS A SEP B SEP`` for a pair
with ``token_type_ids`` 0 for the first segment and 1 for the second.  The saved directory holds
``tokenizer.json`` + ``tokenizer_config.json`` (special tokens, ``model_max_length``) and is
written atomically: a temp dir renamed into place, replacing an older output only when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm

from pipeline.config import save_config
from pipeline.errors import PipelineError
from pipeline.io import replace_dir

__all__ = [
    "MODEL_TYPES",
    "SpecialTokens",
    "SPECIALS",
    "train_tokenizer",
    "to_transformers",
    "save_tokenizer",
    "is_tokenizer_dir",
    "load_tokenizer",
]

MODEL_TYPES = ("wordpiece", "bpe", "unigram")
BYTE_LEVEL_SPACE = "Ġ"  # how byte-level BPE writes the space that starts a word
METASPACE = "▁"  # how SentencePiece / Metaspace marks the start of a word
WORDPIECE_PREFIX = "##"


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens of one model type, in vocabulary order (ids 0..4)."""

    cls: str
    sep: str
    pad: str
    unk: str
    mask: str
    order: tuple[str, ...]

    def transformers_kwargs(self) -> dict[str, str]:
        return {
            "cls_token": self.cls,
            "sep_token": self.sep,
            "pad_token": self.pad,
            "unk_token": self.unk,
            "mask_token": self.mask,
        }


_BERT = SpecialTokens(
    "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
)
_ROBERTA = SpecialTokens(
    "<s>", "</s>", "<pad>", "<unk>", "<mask>", ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
)
SPECIALS = {"wordpiece": _BERT, "bpe": _ROBERTA, "unigram": _BERT}


# ----------------------------------------------------------------------------- building


def _empty_tokenizer(model_type: str, lowercase: bool) -> Tokenizer:
    """An untrained tokenizer: model, normalizer, pre-tokenizer and decoder of ``model_type``."""
    specials = SPECIALS[model_type]
    if model_type == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials.unk, continuing_subword_prefix=WORDPIECE_PREFIX))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix=WORDPIECE_PREFIX)
    elif model_type == "bpe":
        tok = Tokenizer(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    elif model_type == "unigram":
        tok = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    else:
        raise PipelineError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return tok


def _trainer(model_type: str, vocab_size: int, min_frequency: int, limit_alphabet: int | None):
    specials = list(SPECIALS[model_type].order)
    if model_type == "wordpiece":
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            limit_alphabet=limit_alphabet,
            continuing_subword_prefix=WORDPIECE_PREFIX,
            show_progress=False,
        )
    if model_type == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    # Unigram prunes by likelihood, so it has no min_frequency
    return trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token=SPECIALS[model_type].unk,
        show_progress=False,
    )


def _add_post_processor(tok: Tokenizer, model_type: str) -> None:
    """CLS A SEP / CLS A SEP B SEP with token type 0 for A (and its CLS/SEP) and 1 for B."""
    specials = SPECIALS[model_type]
    cls, sep = specials.cls, specials.sep
    template = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    if model_type == "bpe":
        # trim the leading-space byte from offsets, as RoBERTa does (matters for span tasks)
        tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=True), template])
    else:
        tok.post_processor = template


def _batched(documents: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(
    documents: Iterable[str],
    *,
    model_type: str = "wordpiece",
    vocab_size: int,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int | None = 1000,
    batch_size: int = 1000,
    length: int | None = None,
    progress: bool = True,
) -> tuple[Tokenizer, int]:
    """Train on a stream of documents; returns the tokenizer (with post-processor) and the count.

    ``length`` (number of documents, if known) only sizes the progress bar.  Raises PipelineError
    when the stream holds no documents."""
    tok = _empty_tokenizer(model_type, lowercase)
    trainer = _trainer(model_type, vocab_size, min_frequency, limit_alphabet)
    # disable=None: draw the bar only on a terminal, not into log files
    bar = tqdm(total=length, unit=" docs", desc="reading documents", disable=None if progress else True)
    count = 0

    def counted() -> Iterator[list[str]]:
        nonlocal count
        for batch in _batched(documents, batch_size):
            count += len(batch)
            bar.update(len(batch))
            yield batch
        bar.set_description("fitting vocabulary")

    try:
        tok.train_from_iterator(counted(), trainer=trainer)
    finally:
        bar.close()
    if count == 0:
        raise PipelineError("the input holds no documents (every file is empty or blank)")
    _add_post_processor(tok, model_type)
    return tok, count


# ----------------------------------------------------------------------------- saving


def to_transformers(tok: Tokenizer, model_type: str, model_max_length: int = 512):
    """Wrap a trained tokenizer for ``transformers`` (special tokens, max length, token types)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        **SPECIALS[model_type].transformers_kwargs(),
    )


def load_tokenizer(source: str | Path, *, key: str = "", trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained(source)``: the one way the stages load a saved tokenizer.

    Any failure is a PipelineError naming ``source`` (and the config ``key`` it came from)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except Exception as e:  # a broken tokenizer.json / config surfaces as many exception types
        prefix = f"{key}: " if key else ""
        raise PipelineError(
            f"{prefix}cannot load a tokenizer from {source} ({type(e).__name__}: {e})"
        ) from None


def is_tokenizer_dir(path: str | Path) -> bool:
    """True if ``path`` holds a saved tokenizer (what this module writes)."""
    path = Path(path)
    return (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse to replace a non-empty directory that is not a tokenizer output (someone's data)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise PipelineError(f"output_dir {path} exists and is a file")
    if path.is_dir() and any(path.iterdir()) and not is_tokenizer_dir(path):
        raise PipelineError(
            f"output_dir {path} is not empty and holds no tokenizer; refusing to replace it (pick another)"
        )


def save_tokenizer(fast_tokenizer: Any, output_dir: str | Path, resolved_config: Any = None) -> Path:
    """``save_pretrained`` into a temp dir (plus ``config.yaml`` if given), then rename into place."""
    output_dir = Path(output_dir).resolve()  # "." or "out/" still have a name and a parent
    check_output_dir(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        fast_tokenizer.save_pretrained(str(staging))
        _portable_class_name(staging / "tokenizer_config.json")
        if resolved_config is not None:
            save_config(resolved_config, staging / "config.yaml")
        retired = output_dir.with_name(f".{output_dir.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        replace_dir(staging, output_dir, retired)  # an old output is moved aside first, deleted after
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _portable_class_name(config_file: Path) -> None:
    # transformers 5 writes its internal "TokenizersBackend"; the classic name loads in 4.x and 5.x
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
