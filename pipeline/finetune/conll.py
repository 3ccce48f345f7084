"""NER data: read CoNLL column files and normalise IOB1 / IOB2 tags.

Called by the finetune stage for ``task.type=ner`` (``splits = load_ner_splits(cfg.data)``); the
sentences then go to :class:`pipeline.finetune.features.TokenClassificationDataset`, which aligns
sub-words and windows long sentences, and :func:`conll_prediction_lines` writes predictions back.

File format: one token per line, whitespace-separated columns, the token in ``token_column`` and the
tag in ``tag_column`` (negative counts from the end), a blank line between sentences, ``-DOCSTART-``
lines skipped (they also end a sentence).  Tags are ``O``, ``B-TYPE``, ``I-TYPE`` in IOB1 (the
original CoNLL-2003 files: ``I-`` may start a span, ``B-`` only separates adjacent spans of one
type) or IOB2/BIO (every span starts with ``B-``).  Both are converted to IOB2 on reading, so the
spans come out identical either way; ``tag_scheme=auto`` reads a file as IOB1 when some ``I-`` tag
starts a span.  Errors (missing tag column, malformed tag, a span-starting ``I-`` in a file declared
IOB2, a tag unseen in training) name the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import ConfigError, option
from pipeline.errors import PipelineError
from pipeline.finetune.tables import read_text

DOCSTART = "-DOCSTART-"


@dataclass
class ConllConfig:
    """The ``data.conll`` section: how CoNLL files are read and windowed."""

    token_column: int = option(0, "0-based whitespace column holding the token")
    tag_column: int = option(-1, "column holding the tag; negative counts from the end (-1 = last)")
    tag_scheme: Literal["auto", "iob1", "iob2"] = option(
        "auto", "tag scheme of the files; auto: IOB1 if any I- tag starts a span, else IOB2"
    )
    label_all_subtokens: bool = option(
        False, "label every sub-token of a word (default: the first only, the rest ignored)"
    )
    stride: int = option(
        32, "sub-tokens of overlap between consecutive windows of a sentence longer than data.max_length"
    )

    def validate(self) -> None:
        if self.stride < 0:
            raise ConfigError(f"data.conll.stride must be >= 0, got {self.stride}")


@dataclass
class Sentence:
    """One sentence; token ``i`` is on line ``line + i`` of ``path``; ``tags`` is empty when unread."""

    tokens: list[str]
    tags: list[str]
    line: int
    path: str = ""


@dataclass
class NerSplits:
    train: list[Sentence]
    validation: list[Sentence]
    test: list[Sentence] | None
    tag_names: list[str]  # id -> tag, "O" first
    scheme: str  # the scheme the files were read as


def read_conll(
    path: str, token_column: int = 0, tag_column: int = -1, *, require_tags: bool = True
) -> list[Sentence]:
    """Sentences of a CoNLL file; a line without the tag column is an error naming its line."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0

    def close() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags), first, path))
        tokens.clear()
        tags.clear()

    for number, line in enumerate(read_text(path).split("\n"), start=1):  # not splitlines: U+2028 is text
        columns = line.split()
        if not columns or columns[0] == DOCSTART:
            close()
            continue
        try:
            token_at = range(len(columns))[token_column]
            tag_at = range(len(columns))[tag_column] if require_tags else None
        except IndexError:
            token_at = tag_at = None
        if token_at is None or token_at == tag_at or (require_tags and tag_at is None):
            raise PipelineError(
                f"{path}:{number}: expected a token (column {token_column}) and a tag "
                f"(column {tag_column}), found {len(columns)} column(s): {line.strip()!r}"
            )
        if not tokens:
            first = number
        tokens.append(columns[token_at])
        if require_tags:
            tags.append(columns[tag_at])
    close()
    if not sentences:
        raise PipelineError(f"{path}: no sentences (the file is empty or holds only -DOCSTART- lines)")
    return sentences


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not kind:
        raise ValueError(f"tag {tag!r} is not O, B-TYPE or I-TYPE")
    return prefix, kind


def _starts_span_with_i(tags: list[str], i: int) -> bool:
    prefix, kind = _split_tag(tags[i])
    return prefix == "I" and (i == 0 or _split_tag(tags[i - 1])[1] != kind)


def detect_scheme(sentences: list[Sentence]) -> str:
    """'iob1' if some I- tag starts a span (not after a tag of its type), else 'iob2'."""
    for sentence in sentences:
        for i in range(len(sentence.tags)):
            if _starts_span_with_i(sentence.tags, i):
                return "iob1"
    return "iob2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """IOB1 -> IOB2: an I- tag that starts a span becomes B-.  IOB2 input is returned unchanged;
    an I- tag starting a span in it raises ValueError (the file is not IOB2)."""
    out = list(tags)
    for i in range(len(tags)):
        if _starts_span_with_i(tags, i):
            if scheme != "iob1":
                raise ValueError(f"{tags[i]!r} starts a span, which IOB2 does not allow (is the file IOB1?)")
            out[i] = "B-" + tags[i][2:]
    return out


def check_tags(sentences: list[Sentence]) -> None:
    """Every tag is O, B-TYPE or I-TYPE, else a PipelineError naming file and line."""
    for s in sentences:
        for i, tag in enumerate(s.tags):
            try:
                _split_tag(tag)
            except ValueError as e:
                raise PipelineError(f"{s.path}:{s.line + i}: {e}") from None


def normalize_tags(sentences: list[Sentence], scheme: str) -> list[Sentence]:
    """Sentences with IOB2 tags; a bad tag is a PipelineError naming file and line."""
    check_tags(sentences)
    out = []
    for s in sentences:
        try:
            out.append(Sentence(s.tokens, to_iob2(s.tags, scheme), s.line, s.path))
        except ValueError as e:
            bad = next(i for i in range(len(s.tags)) if _starts_span_with_i(s.tags, i))
            raise PipelineError(
                f"{s.path}:{s.line + bad}: {e}; set data.conll.tag_scheme=iob1 or auto"
            ) from None
    return out


def build_tag_set(sentences: list[Sentence]) -> list[str]:
    """'O', then B-TYPE and I-TYPE for every entity type seen, types sorted."""
    kinds = sorted({_split_tag(t)[1] for s in sentences for t in s.tags} - {""})
    return ["O"] + [f"{p}-{k}" for k in kinds for p in ("B", "I")]


def load_ner_splits(cfg: Any) -> NerSplits:
    """Read ``cfg.train`` / ``validation`` / ``test`` (a FinetuneDataConfig) as CoNLL files.

    The scheme is ``cfg.conll.tag_scheme``, or detected over train and validation together."""
    c = cfg.conll
    train = read_conll(cfg.train, c.token_column, c.tag_column)
    validation = read_conll(cfg.validation, c.token_column, c.tag_column)
    test = read_conll(cfg.test, c.token_column, c.tag_column, require_tags=False) if cfg.test else None
    check_tags(train + validation)
    scheme = c.tag_scheme if c.tag_scheme != "auto" else detect_scheme(train + validation)
    train, validation = normalize_tags(train, scheme), normalize_tags(validation, scheme)
    return NerSplits(train, validation, test, build_tag_set(train), scheme)


def conll_prediction_lines(sentences: list[Sentence], predicted: list[list[str]]) -> list[str]:
    """CoNLL text for predictions.tsv: ``token [gold] predicted`` per line, blank line between sentences."""
    lines = []
    for sentence, tags in zip(sentences, predicted):
        for i, token in enumerate(sentence.tokens):
            gold = [sentence.tags[i]] if sentence.tags else []
            lines.append(" ".join([token, *gold, tags[i]]))
        lines.append("")
    return lines
