"""Streaming corpus readers: turn the ``input`` list of a stage into a stream of documents.

Used by the ``tokenizer`` and ``shard`` stages (``pipeline tokenizer|shard --config FILE``); both
embed :class:`CorpusConfig` as their ``corpus`` section.  Files are read incrementally (line by
line, or batch by batch for parquet), never loaded whole.

Inputs are resolved first (:func:`pipeline.text.inputs.resolve_inputs`: files, globs,
directories, hub dataset names); hub datasets are streamed with ``datasets.load_dataset(name,
corpus.hub_config, split=corpus.hub_split, streaming=True)``, or read from their local mirror when
the hub is unreachable (:mod:`pipeline.text.hub`).

Formats, chosen by suffix, each optionally gzip-compressed (``.gz`` appended, e.g. ``x.jsonl.gz``):

* ``.txt``     ``corpus.doc_boundary=line``: one document per line;
               ``corpus.doc_boundary=blank_line``: paragraphs separated by blank lines (lines of a
               paragraph are joined with ``\\n``).
* ``.jsonl``   one JSON object per line; the document is the string under ``corpus.text_field``.
* ``.csv``     header row first; the document is the column named ``corpus.text_field``.
* ``.parquet`` the string column named ``corpus.text_field``, read row group by row group.

Decode policy: text is UTF-8 (a leading byte-order mark is dropped).  With
``corpus.encoding_errors=strict`` an invalid byte is a :class:`PipelineError` naming the file and
line; with ``replace`` it becomes U+FFFD.  Line endings (``\\n`` or ``\\r\\n``) are stripped, other
whitespace is kept.  Documents that are empty or whitespace-only (and null values) are skipped.  A
line or document longer than ``corpus.max_line_bytes`` is an error naming the file and line: it is
almost always binary junk or a mis-split file.  An unsupported suffix, a missing key or column and
a malformed JSON line are errors naming the file (and line).
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Literal

from pipeline.config import option
from pipeline.errors import ConfigError, PipelineError
from pipeline.text.hub import load_hub_or_local
from pipeline.text.inputs import HUB_PREFIX, SUFFIXES, format_of, is_hub_name, unsupported_input

__all__ = ["CorpusConfig", "iter_documents", "iter_corpus"]

_PARQUET_BATCH_ROWS = 1024


@dataclass
class CorpusConfig:
    """How raw text inputs are read (shared by the tokenizer and shard stages)."""

    text_field: str = option(
        "text", "jsonl key / csv or parquet column / hub dataset column holding the text"
    )
    doc_boundary: Literal["line", "blank_line"] = option(
        "line", ".txt files: one document per line, or paragraphs separated by blank lines"
    )
    encoding_errors: Literal["strict", "replace"] = option(
        "strict", "invalid UTF-8 bytes: 'strict' fails naming file and line, 'replace' substitutes U+FFFD"
    )
    max_line_bytes: int = option(
        1_000_000, "a longer line/document is an error naming file and line (guards against binary junk)"
    )
    hub_split: str = option("train", "split to read when an input is a Hugging Face hub dataset name")
    hub_config: str | None = option(None, "hub dataset configuration name, e.g. 'wikitext-2-raw-v1'")

    def validate(self) -> None:
        if self.max_line_bytes < 1:
            raise ConfigError(f"corpus.max_line_bytes: must be >= 1, got {self.max_line_bytes}")
        if not self.text_field:
            raise ConfigError("corpus.text_field: must not be empty")


# ----------------------------------------------------------------------------- reading


def iter_corpus(sources: list[str], cfg: CorpusConfig) -> Iterator[str]:
    """Every document of every (resolved) source, in order."""
    for source in sources:
        yield from iter_documents(source, cfg)


def iter_documents(source: str, cfg: CorpusConfig) -> Iterator[str]:
    """The documents of ONE resolved input (a file path or hub name), streamed."""
    if is_hub_name(source):
        yield from _iter_hub(source, cfg)
        return
    fmt = format_of(source)
    if fmt is None:
        raise unsupported_input(source)
    reader = {".txt": _iter_txt, ".jsonl": _iter_jsonl, ".csv": _iter_csv, ".parquet": _iter_parquet}[fmt]
    try:
        with _open_binary(source) as stream:
            yield from reader(stream, source, cfg)
    except FileNotFoundError:
        raise PipelineError(f"input file not found: {source}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        # a corrupt or truncated .gz surfaces while reading, not while opening
        raise PipelineError(f"cannot read {source}: {e}") from None


def _open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _decode(raw: bytes, path: str, line_no: int, cfg: CorpusConfig) -> str:
    try:
        return raw.decode("utf-8", errors=cfg.encoding_errors)
    except UnicodeDecodeError as e:
        raise PipelineError(
            f"{path}:{line_no}: invalid UTF-8 byte at column {e.start + 1} "
            "(set corpus.encoding_errors=replace to substitute U+FFFD)"
        ) from None


def _too_long(path: str, where: int | str, what: str, cfg: CorpusConfig) -> PipelineError:
    return PipelineError(
        f"{path}:{where}: {what} longer than corpus.max_line_bytes={cfg.max_line_bytes} bytes "
        "(binary data, or a file that is not split into documents?)"
    )


def _iter_lines(stream: IO[bytes], path: str, cfg: CorpusConfig) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its line ending); memory bounded by max_line_bytes."""
    line_no = 0
    while True:
        # +2 leaves room for "\r\n": a complete line of the maximum length still fits in one read
        raw = stream.readline(cfg.max_line_bytes + 2)
        if not raw:
            return
        line_no += 1
        content = raw.rstrip(b"\r\n")
        if len(content) > cfg.max_line_bytes:
            raise _too_long(path, line_no, "line", cfg)
        if line_no == 1 and content.startswith(b"\xef\xbb\xbf"):
            content = content[3:]
        yield line_no, _decode(content, path, line_no, cfg)


def _iter_txt(stream: IO[bytes], path: str, cfg: CorpusConfig) -> Iterator[str]:
    if cfg.doc_boundary == "line":
        for _, line in _iter_lines(stream, path, cfg):
            if line.strip():
                yield line
        return
    paragraph: list[str] = []
    size = start = 0
    for line_no, line in _iter_lines(stream, path, cfg):
        if not line.strip():
            if paragraph:
                yield "\n".join(paragraph)
            paragraph, size = [], 0
            continue
        if not paragraph:
            start = line_no
        paragraph.append(line)
        size += len(line) + 1
        if size > cfg.max_line_bytes:  # characters <= bytes, so this is a lower bound
            raise _too_long(path, start, "document (paragraph starting here)", cfg)
    if paragraph:
        yield "\n".join(paragraph)


def _text_value(value: object, path: str, where: int | str, cfg: CorpusConfig) -> str | None:
    """A document from a jsonl/csv/parquet/hub value; None for null or blank values."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PipelineError(f"{path}:{where}: {cfg.text_field!r} is not text (got {type(value).__name__})")
    if len(value) > cfg.max_line_bytes:
        raise _too_long(path, where, "document", cfg)
    return value if value.strip() else None


def _iter_jsonl(stream: IO[bytes], path: str, cfg: CorpusConfig) -> Iterator[str]:
    for line_no, line in _iter_lines(stream, path, cfg):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise PipelineError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        if cfg.text_field not in record:
            keys = ", ".join(map(str, record)) or "none"
            raise PipelineError(
                f"{path}:{line_no}: no key {cfg.text_field!r} (keys: {keys}); set corpus.text_field"
            )
        text = _text_value(record[cfg.text_field], path, line_no, cfg)
        if text is not None:
            yield text


def _iter_csv(stream: IO[bytes], path: str, cfg: CorpusConfig) -> Iterator[str]:
    # our line reader decodes (exact line numbers for bad bytes) and caps line length; the csv
    # module joins the lines of quoted multi-line fields.  Its own 128 KiB field cap is raised.
    csv.field_size_limit(cfg.max_line_bytes + 1)  # process-wide: set explicitly at every open
    reader = csv.reader(line + "\n" for _, line in _iter_lines(stream, path, cfg))
    try:
        header = next(reader, None)
        if header is None:
            raise PipelineError(f"{path}: no header row")
        if cfg.text_field not in header:
            raise PipelineError(
                f"{path}:1: no column {cfg.text_field!r} (columns: {', '.join(header)}); set corpus.text_field"
            )
        column = header.index(cfg.text_field)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise PipelineError(f"{path}:{reader.line_num}: {len(row)} fields, header has {len(header)}")
            value = _text_value(row[column], path, reader.line_num, cfg)
            if value is not None:
                yield value
    except csv.Error as e:
        raise PipelineError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def _iter_parquet(stream: IO[bytes], path: str, cfg: CorpusConfig) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as e:
        raise PipelineError(f"{path}: not a readable parquet file ({e})") from None
    schema = parquet.schema_arrow
    if cfg.text_field not in schema.names:
        raise PipelineError(
            f"{path}: no column {cfg.text_field!r} (columns: {', '.join(schema.names)}); set corpus.text_field"
        )
    kind = schema.field(cfg.text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise PipelineError(f"{path}: column {cfg.text_field!r} has type {kind}, not string")
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[cfg.text_field]):
            for value in batch.column(0).to_pylist():
                row += 1
                text = _text_value(value, path, f"row {row}", cfg)
                if text is not None:
                    yield text
    except pa.ArrowException as e:
        raise PipelineError(f"{path}: corrupt parquet data after row {row} ({e})") from None


def _iter_hub(source: str, cfg: CorpusConfig) -> Iterator[str]:
    name = source[len(HUB_PREFIX) :] if source.startswith(HUB_PREFIX) else source
    hint = f"Point `input` at local files ({', '.join(SUFFIXES)}, optionally .gz) instead."
    rows, local = load_hub_or_local(
        name, cfg.hub_config, cfg.hub_split, streaming=True, source=f"input {source}", local_hint=hint
    )
    if local is not None:  # the hub is unreachable: its local mirror (a file of this module's formats)
        yield from iter_documents(str(local.path), cfg)
        return
    try:
        for index, record in enumerate(rows, start=1):
            if cfg.text_field not in record:
                raise PipelineError(
                    f"hub dataset {name}: no column {cfg.text_field!r} (columns: {', '.join(record)}); "
                    "set corpus.text_field"
                )
            text = _text_value(record[cfg.text_field], f"hub dataset {name}", f"row {index}", cfg)
            if text is not None:
                yield text
    except PipelineError:
        raise
    except Exception as e:  # network errors surface while streaming too
        raise PipelineError(f"hub dataset {name}: reading failed ({type(e).__name__}: {e})") from None
