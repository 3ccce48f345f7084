"""Fine-tuning data: read labelled tables, build the label set, tokenize, pad per batch.

Called by the finetune stage (``pipeline finetune``); nothing here trains.  The usual flow::

    splits = load_splits(cfg.data, "classification")     # train / validation / test Examples + label names
    train = ClassificationDataset(splits.train, tokenizer, cfg.data.max_length)
    loader = DataLoader(train, batch_size=32, collate_fn=partial(collate_dynamic, pad_id=tokenizer.pad_token_id))

The dataset and collator live in :mod:`pipeline.finetune.features`, the raw file readers in
:mod:`pipeline.finetune.tables`.

Files: ``.tsv`` / ``.csv`` (read with the csv module, tsv without quoting since GLUE text holds bare
quotes; a UTF-8 BOM is dropped), ``.jsonl`` (one object per line), ``.parquet``; any other value that
is not a local path is a Hugging Face hub dataset (``NAME`` or ``NAME:SPLIT``, config in
``data.hub_config``).  Columns are names or 0-based indices (indices for header-less files such as
CoLA).  A bad row (wrong column count, missing column, empty text, missing / non-numeric / unseen
label) is a :class:`PipelineError` naming ``file:line``, or with ``data.skip_bad_rows`` it is skipped
and counted in the returned stats.  NER (CoNLL files) lives in :mod:`pipeline.finetune.conll`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import console
from pipeline.config import REQUIRED, ConfigError, option, section
from pipeline.errors import PipelineError
from pipeline.finetune.conll import ConllConfig
from pipeline.finetune.tables import open_rows
from pipeline.finetune.task import TaskType

INDEX_COLUMNS = ("index", "idx")  # taken as the example id when data.index_column is unset


@dataclass
class FinetuneDataConfig:
    """The ``data`` section of ``pipeline finetune``."""

    train: str = option(
        REQUIRED,
        "training file (.tsv/.csv/.jsonl/.parquet; CoNLL .txt/.conll for ner) or hub dataset NAME[:SPLIT]",
    )
    validation: str = option(
        REQUIRED, "validation file or hub dataset NAME[:SPLIT] (split defaults to 'validation')"
    )
    test: str | None = option(
        None, "optional unlabelled file to predict (predictions.tsv); hub split defaults to 'test'"
    )
    text_columns: list[str] = option(
        ["sentence"],
        "one or two text columns (a sentence pair): names, or 0-based indices for header-less files",
    )
    label_column: str = option("label", "label column: a name, or a 0-based index for header-less files")
    index_column: str | None = option(
        None,
        "column with the example id written to predictions; default: a column named 'index' or 'idx', else the 0-based row number",
    )
    header: bool = option(
        True, "the first line of a tsv/csv file names the columns (false for CoLA train/dev)"
    )
    delimiter: str | None = option(
        None, "field separator of text tables; default from the suffix (tab for .tsv, comma for .csv)"
    )
    test_header: bool | None = option(
        None,
        "data.header for the test file when it differs (CoLA: its test file has a header); default: data.header",
    )
    test_text_columns: list[str] | None = option(
        None, "data.text_columns for the test file when they differ; default: data.text_columns"
    )
    labels: list[str] | None = option(
        None,
        "explicit label order (id i = labels[i]); default: the training labels, sorted (numerically if all are integers)",
    )
    skip_bad_rows: bool = option(
        False, "skip (and count in the log) bad rows of table files instead of stopping with an error"
    )
    max_length: int = option(
        128,
        "maximum tokens per example incl. special tokens; longer text is truncated (NER: split into windows)",
    )
    group_by_length: bool = option(
        False,
        "batch examples of similar length together: 2-2.7x faster on SST-2 (less padding), but batches are less random - measured harmless from a pretrained model, noisier from scratch (README)",
    )
    packing: bool = option(
        True,
        "pack the examples of each training micro-batch end to end into rows of max_length tokens (block-diagonal attention, per-example positions) instead of padding them: the same batches, loss and gradients (tested), without the padding (BERT / ModernBERT)",
    )
    hub_config: str | None = option(
        None, "dataset config name for hub datasets, e.g. 'sst2' with data.train=nyu-mll/glue"
    )
    conll: ConllConfig = section(ConllConfig, "CoNLL column files for task.type=ner")

    def validate(self) -> None:
        if not 1 <= len(self.text_columns) <= 2:
            raise ConfigError(f"data.text_columns: give one column or two (a pair), got {self.text_columns}")
        if self.test_text_columns is not None and len(self.test_text_columns) != len(self.text_columns):
            raise ConfigError("data.test_text_columns must name as many columns as data.text_columns")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"data.delimiter must be one character, got {self.delimiter!r}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be at least 8, got {self.max_length}")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"data.labels has duplicates: {self.labels}")


@dataclass
class Example:
    """One row.  ``label``: class id (int), regression target (float), the raw label string when
    read without a label set (see :func:`build_label_set`), or None for unlabelled rows."""

    text: str
    text_pair: str | None
    label: int | float | str | None
    line: int  # 1-based line of the row (row number for parquet / hub data)
    index: str  # example id for predictions


@dataclass
class Splits:
    """What :func:`load_splits` returns; ``label_names`` is empty for regression."""

    train: list[Example]
    validation: list[Example]
    test: list[Example] | None
    label_names: list[str]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 from parquet/jsonl is the class "1"
    return str(value).strip()


def _parse_label(raw: Any, task_type: str, label2id: dict[str, int] | None) -> tuple[Any, str | None]:
    """(label, None) or (None, 'reason: message')."""
    if raw is None or _label_text(raw) == "":
        return None, "missing_label: missing label"
    text = _label_text(raw)
    if task_type == "regression":
        try:
            value = float(text)
        except ValueError:
            return None, f"bad_label: label {text!r} is not a number"
        return (value, None) if math.isfinite(value) else (None, f"bad_label: label {text!r} is not finite")
    if label2id is None:
        return text, None
    if text not in label2id:
        return None, f"unknown_label: label {text!r} is not in the training label set {list(label2id)}"
    return label2id[text], None


@dataclass
class _Layout:
    """Which columns of a source hold the text(s), the label and the example id."""

    texts: list[str]
    label: str | None
    index: str | None

    def example(self, record: dict, row: int, line: int, task_type: str, label2id: dict[str, int] | None):
        """An Example, or a 'reason: message' string for a bad row."""
        texts = []
        for col in self.texts:
            if col not in record:
                return f"missing_column: no column {col!r}"
            text = "" if record[col] is None else str(record[col]).strip()  # GLUE rows end in a space
            if not text:
                return f"empty_text: empty text in column {col!r}"
            texts.append(text)
        label = None
        if self.label is not None:
            label, problem = _parse_label(record.get(self.label), task_type, label2id)
            if problem:
                return problem
        index = str(record.get(self.index, row)) if self.index else str(row)
        return Example(texts[0], texts[1] if len(texts) > 1 else None, label, line, index)


def _skip_stats(name: str, rows: int, kept: int, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """The stats of one read; warns when rows were skipped."""
    reasons = dict(Counter(reason for reason, _ in problems))
    shown = [where_message for _, where_message in problems[:3]]
    if problems:
        console.warn(f"{name}: skipped {len(problems)} bad rows of {rows} ({reasons}), e.g. {shown[0]}")
    return {
        "rows": rows,
        "examples": kept,
        "skipped": len(problems),
        "skipped_reasons": reasons,
        "first_skipped": shown,
    }


def read_table(
    path: str,
    cfg: FinetuneDataConfig,
    task_type: TaskType = "classification",
    *,
    label_names: list[str] | None = None,
    require_labels: bool = True,
    header: bool | None = None,
    text_columns: list[str] | None = None,
    split: str = "train",
) -> tuple[list[Example], dict[str, Any]]:
    """Read one labelled (or, with ``require_labels=False``, unlabelled: labels left None) table.

    Classification labels become ids in ``label_names`` when given (an unseen label is a bad row),
    else stay raw strings for :func:`build_label_set`.  ``header``/``text_columns`` override the
    config's (for a test file laid out differently); ``split`` names the hub split to use.
    Returns ``(examples, stats)``; stats: rows, examples, skipped, skipped_reasons, first_skipped."""
    header = cfg.header if header is None else header
    source = open_rows(path, header=header, delimiter=cfg.delimiter, hub_config=cfg.hub_config, split=split)
    layout = _Layout(
        [source.column(c, "data.text_columns") for c in text_columns or cfg.text_columns],
        source.column(cfg.label_column, "data.label_column") if require_labels else None,
        source.column(cfg.index_column, "data.index_column")
        if cfg.index_column
        else next((c for c in INDEX_COLUMNS if c in source.names), None),
    )
    label2id = {name: i for i, name in enumerate(label_names)} if label_names is not None else None
    examples, problems, rows = [], [], 0
    for line, record in source.rows:
        if isinstance(record, dict):
            record = layout.example(record, rows, line, task_type, label2id)
        rows += 1
        if isinstance(record, Example):
            examples.append(record)
            continue
        reason, message = record.split(": ", 1)
        if not cfg.skip_bad_rows:
            raise PipelineError(f"{source.where(line)}: {message} (data.skip_bad_rows=true skips such rows)")
        problems.append((reason, f"{source.where(line)}: {message}"))
    if not examples:
        why = f"all {rows} rows were bad" if rows else "it has no data rows"
        raise PipelineError(f"{source.name}: no usable examples ({why})")
    return examples, _skip_stats(source.name, rows, len(examples), problems)


def build_label_set(examples: list[Example]) -> list[str]:
    """Label names in a stable order: numerically sorted if all are integers, else sorted strings."""
    names = {_label_text(e.label) for e in examples if e.label is not None}
    if not names:
        raise PipelineError("the training data has no labels")
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def apply_label_set(examples: list[Example], label_names: list[str]) -> list[Example]:
    """Raw string labels (from a read without label_names) -> ids in ``label_names``."""
    label2id = {name: i for i, name in enumerate(label_names)}
    return [replace(e, label=label2id[_label_text(e.label)]) for e in examples]


def load_splits(cfg: FinetuneDataConfig, task_type: TaskType) -> Splits:
    """Read train, validation and (if set) test for classification or regression.

    The label set comes from ``data.labels`` or else the training file; validation labels outside
    it are bad rows.  An empty split is a :class:`PipelineError` naming the file."""
    stats: dict[str, dict[str, Any]] = {}
    label_names: list[str] = []
    if task_type == "classification" and cfg.labels is not None:
        label_names = list(cfg.labels)
        train, stats["train"] = read_table(cfg.train, cfg, task_type, label_names=label_names)
    else:
        train, stats["train"] = read_table(cfg.train, cfg, task_type)
        if task_type == "classification":
            label_names = build_label_set(train)
            train = apply_label_set(train, label_names)
            if len(label_names) < 2:
                raise PipelineError(
                    f"{cfg.train}: classification needs at least 2 labels, found {label_names}"
                )
    known = label_names if task_type == "classification" else None
    validation, stats["validation"] = read_table(
        cfg.validation, cfg, task_type, label_names=known, split="validation"
    )
    test = None
    if cfg.test:
        test, stats["test"] = read_table(
            cfg.test,
            cfg,
            task_type,
            require_labels=False,
            header=cfg.test_header,
            text_columns=cfg.test_text_columns,
            split="test",
        )
    return Splits(train, validation, test, label_names, stats)
