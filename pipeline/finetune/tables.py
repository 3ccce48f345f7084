"""Row readers for fine-tuning tables: tsv / csv / jsonl / parquet files and hub datasets.

Used by :func:`pipeline.finetune.data.read_table` (the finetune stage's data layer); it turns any
source into named columns plus ``(line, record)`` pairs, where a record is a ``{column: value}``
dict or, for a row that cannot be one, a ``"reason: message"`` string the caller reports or skips.

* ``.tsv`` / ``.csv``: the csv module; tsv without quoting (GLUE text holds bare ``"`` characters),
  csv with standard quoting.  UTF-8 is required (an invalid byte is an error naming file and line);
  a leading byte-order mark is dropped (MRPC starts with one).  Blank lines are skipped.  With a
  header the first row names the columns; without one the columns are named ``"0"``, ``"1"``, ...
  and every row must have as many fields as the first.
* ``.jsonl``: one JSON object per line; the columns are the union of the keys.
* ``.parquet``: pyarrow; locations are row numbers.
* anything else that is not a local path (``hf://NAME`` or a bare ``NAME`` / ``owner/NAME``, with an
  optional ``:SPLIT``): ``datasets.load_dataset(NAME, hub_config, split=SPLIT)``; when the hub is
  unreachable, the split's local mirror file (:mod:`pipeline.text.hub`) read under the hub's column
  names.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.text import LocalCopy, is_hub_name, load_hub_or_local

DEFAULT_DELIMITERS = {".tsv": "\t", ".csv": ","}
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".parquet")

Row = tuple[int, "dict[str, Any] | str"]


@dataclass
class RowSource:
    """Columns and rows of one file or hub split."""

    name: str  # the path, or "hub dataset NAME (split S)"
    names: list[str]  # column names, in file order
    rows: Iterator[Row]
    by_line: bool = True  # locations are file lines ("path:12"), else row numbers ("path: row 12")

    def where(self, line: int) -> str:
        return f"{self.name}:{line}" if self.by_line else f"{self.name}: row {line}"

    def column(self, spec: str | int, key: str) -> str:
        """A column given by name or 0-based index (int or digit string; names win) -> its name."""
        spec = str(spec).strip()
        if spec in self.names:
            return spec
        if re.fullmatch(r"-?\d+", spec) and -len(self.names) <= int(spec) < len(self.names):
            return self.names[int(spec)]
        raise PipelineError(f"{self.name}: column {spec!r} ({key}) not found; the columns are {self.names}")


def split_hub_spec(spec: str, default_split: str) -> tuple[str, str]:
    """``'nyu-mll/glue:validation'`` -> ``('nyu-mll/glue', 'validation')``."""
    name, _, split = spec.removeprefix("hf://").partition(":")
    return name, split or default_split


def open_rows(
    path: str,
    *,
    header: bool = True,
    delimiter: str | None = None,
    hub_config: str | None = None,
    split: str = "train",
) -> RowSource:
    """Open ``path`` (a local table or a hub spec) as a :class:`RowSource`."""
    suffix = Path(path).suffix.lower()
    hub_name, hub_split = split_hub_spec(path, split)
    if (
        not os.path.exists(path)
        and suffix not in TABLE_SUFFIXES
        and (path.startswith("hf://") or is_hub_name(hub_name))
    ):
        return _hub_rows(hub_name, hub_split, hub_config)
    if not os.path.isfile(path):
        raise PipelineError(f"data file not found: {path}")
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    if suffix in DEFAULT_DELIMITERS:
        return _delimited_rows(path, delimiter or DEFAULT_DELIMITERS[suffix], header)
    raise PipelineError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; use {', '.join(TABLE_SUFFIXES)}"
    )


def read_text(path: str) -> str:
    """The whole file as text: strict UTF-8, BOM dropped; a bad byte names its line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PipelineError(f"{path}:{line}: invalid UTF-8 byte (the file must be UTF-8 text)") from None


MAX_FIELD_CHARS = 131072  # the csv module's default; a longer field is a broken row, not a sentence


def _delimited_rows(path: str, delimiter: str, header: bool) -> RowSource:
    csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide setting: set it here, whoever changed it before
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if fields and not (len(fields) == 1 and not fields[0].strip()):
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise PipelineError(f"{path}:{start}: unreadable row ({e})") from None
    if not rows:
        raise PipelineError(f"{path}: the file is empty")
    if header:
        names = [name.strip() for name in rows.pop(0)[1]]
    else:
        names = [str(i) for i in range(len(rows[0][1]))]
    sep = "tab" if delimiter == "\t" else repr(delimiter)

    def records() -> Iterator[Row]:
        for line, fields in rows:
            if len(fields) != len(names):
                yield (
                    line,
                    f"wrong_column_count: expected {len(names)} {sep}-separated columns, found {len(fields)}",
                )
            else:
                yield line, dict(zip(names, fields))

    return RowSource(path, names, records())


def _jsonl_rows(path: str) -> RowSource:
    rows: list[Row] = []
    names: dict[str, None] = {}  # ordered set
    for line, text in enumerate(read_text(path).split("\n"), start=1):  # not splitlines: U+2028 is JSON text
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            rows.append((line, f"invalid_json: invalid JSON ({e.msg})"))
            continue
        if not isinstance(record, dict):
            rows.append((line, f"invalid_json: expected a JSON object, got {type(record).__name__}"))
            continue
        names.update(dict.fromkeys(record))
        rows.append((line, record))
    if not rows:
        raise PipelineError(f"{path}: the file is empty")
    return RowSource(path, list(names), iter(rows))


def _parquet_rows(path: str) -> RowSource:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise PipelineError(f"{path}: not a readable parquet file ({e})") from None
    return RowSource(path, list(table.schema.names), enumerate(table.to_pylist(), start=1), by_line=False)


def _hub_rows(name: str, split: str, config: str | None) -> RowSource:
    hint = f"Without the hub, point data.train / data.validation / data.test at local {', '.join(TABLE_SUFFIXES)} files."
    data, local = load_hub_or_local(name, config, split, streaming=False, source=name, local_hint=hint)
    if local is not None:
        return _as_hub_columns(open_rows(str(local.path), header=local.header), local)
    return RowSource(
        f"hub dataset {name} ({split})", list(data.column_names), enumerate(data, start=1), by_line=False
    )


def _as_hub_columns(source: RowSource, local: LocalCopy) -> RowSource:
    """The local mirror's rows under the hub's column names and values (e.g. ``label`` for CoLA's
    column 1, RTE's 'entailment' -> '0'), so a config written for the hub reads it unchanged."""
    columns = {hub: source.column(mine, f"local copy of {hub!r}") for hub, mine in local.columns.items()}

    def records() -> Iterator[Row]:
        for line, record in source.rows:
            if isinstance(record, dict):
                record = {hub: record[mine] for hub, mine in columns.items()}
                for hub, mapping in local.values.items():
                    record[hub] = mapping.get(record[hub], record[hub])
            yield line, record

    return RowSource(source.name, list(columns), records(), source.by_line)
