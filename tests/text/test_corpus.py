"""Tests for pipeline/text/corpus.py: every input format (+ .gz), input resolution and every error."""

from __future__ import annotations

import csv
import gzip
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import PipelineError
from pipeline.text import CorpusConfig, is_hub_name, iter_corpus, iter_documents, resolve_inputs

DOCS = ["first document, with a comma", 'second "quoted" one', "third: ünïcödé ✓"]


def _write_bytes(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_corpus(path: Path, docs: list[str], field: str = "text") -> Path:
    """Write ``docs`` in the format named by ``path``'s suffix (optionally .gz)."""
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind == "txt":
        return _write_bytes(path, "".join(d + "\n" for d in docs).encode())
    if kind == "jsonl":
        lines = [json.dumps({"id": i, field: d}) for i, d in enumerate(docs)]
        return _write_bytes(path, ("\n".join(lines) + "\n").encode())
    if kind == "csv":
        plain = path.with_name("plain.csv")
        with open(plain, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", field])
            writer.writerows(enumerate(docs))
        return _write_bytes(path, plain.read_bytes())
    assert kind == "parquet"
    plain = path.with_name("plain.parquet")
    pq.write_table(pa.table({"id": list(range(len(docs))), field: docs}), plain, row_group_size=2)
    return _write_bytes(path, plain.read_bytes())


@pytest.mark.parametrize("name", ["c.txt", "c.jsonl", "c.csv", "c.parquet"])
@pytest.mark.parametrize("gz", ["", ".gz"])
def test_each_format_reads_documents_in_order(tmp_path, name, gz):
    path = write_corpus(tmp_path / (name + gz), DOCS)
    assert list(iter_documents(str(path), CorpusConfig())) == DOCS


@pytest.mark.parametrize("name", ["c.jsonl", "c.csv", "c.parquet"])
def test_text_field_selects_the_key_or_column(tmp_path, name):
    path = write_corpus(tmp_path / name, DOCS, field="body")
    assert list(iter_documents(str(path), CorpusConfig(text_field="body"))) == DOCS
    with pytest.raises(PipelineError, match=r"c\.\w+.*'text'.*body"):
        list(iter_documents(str(path), CorpusConfig()))


def test_txt_line_mode_strips_line_endings_bom_and_skips_blank_lines(tmp_path):
    path = _write_bytes(tmp_path / "c.txt", b"\xef\xbb\xbf  lead space\r\n\n   \nlast line no newline")
    assert list(iter_documents(str(path), CorpusConfig())) == ["  lead space", "last line no newline"]


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_txt_blank_line_mode_joins_paragraph_lines(tmp_path, gz):
    text = b"\n\npara one\nstill one\n\n \n\npara two\n"
    path = _write_bytes(tmp_path / ("c.txt" + gz), text)
    docs = list(iter_documents(str(path), CorpusConfig(doc_boundary="blank_line")))
    assert docs == ["para one\nstill one", "para two"]


def test_csv_quoted_multiline_field_is_one_document(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text,label\n"line one\nline two",1\nsecond,0\n', encoding="utf-8")
    assert list(iter_documents(str(path), CorpusConfig())) == ["line one\nline two", "second"]


def test_null_and_blank_values_are_skipped(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": null}\n\n{"text": "  "}\n{"text": "kept"}\n', encoding="utf-8")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [None, "", "kept"]}), parquet)
    assert list(iter_corpus([str(jsonl), str(parquet)], CorpusConfig())) == ["kept", "kept"]


def test_reading_is_lazy(tmp_path):
    # a bad line far down the file must not stop the first document from arriving
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n' + '{"text": "x"}\n' * 1000 + "not json\n", encoding="utf-8")
    stream = iter_documents(str(path), CorpusConfig())
    assert next(stream) == "ok"
    with pytest.raises(PipelineError, match=r"c\.jsonl:1002: malformed JSON"):
        list(stream)


# ----------------------------------------------------------------------------- resolve_inputs


def test_resolve_expands_globs_sorted_and_deduplicated(tmp_path):
    for name in ["b.txt", "a.txt", "c.jsonl"]:
        write_corpus(tmp_path / name, DOCS)
    resolved = resolve_inputs([str(tmp_path / "*.txt"), str(tmp_path / "a.txt"), str(tmp_path / "*")])
    assert [Path(p).name for p in resolved] == ["a.txt", "b.txt", "c.jsonl"]


def test_resolve_expands_a_directory_to_supported_files(tmp_path):
    (tmp_path / "sub").mkdir()
    write_corpus(tmp_path / "sub" / "x.jsonl.gz", DOCS)
    write_corpus(tmp_path / "y.txt", DOCS)
    (tmp_path / "notes.md").write_text("ignored")
    assert [Path(p).name for p in resolve_inputs([str(tmp_path)])] == ["x.jsonl.gz", "y.txt"]


def test_resolve_keeps_hub_names():
    assert resolve_inputs(["hf://owner/data", "wikitext"]) == ["hf://owner/data", "wikitext"]
    assert is_hub_name("Salesforce/wikitext") and not is_hub_name("missing/file.txt")


@pytest.mark.parametrize(
    "make, pattern, message",
    [
        (None, "missing.txt", "input file not found: .*missing.txt"),
        (None, "*.jsonl", r"input pattern '.*\*\.jsonl' matches no files"),
        ("empty.txt", "empty.txt", "input file is empty: .*empty.txt"),
        ("data.docx", "data.docx", "unsupported input file type: .*data.docx"),
    ],
)
def test_resolve_errors_name_the_input(tmp_path, make, pattern, message):
    if make:
        (tmp_path / make).write_bytes(b"" if make.startswith("empty") else b"x")
    with pytest.raises(PipelineError, match=message):
        resolve_inputs([str(tmp_path / pattern)])


def test_resolve_rejects_an_empty_input_list():
    with pytest.raises(PipelineError, match="no input"):
        resolve_inputs([])


# ----------------------------------------------------------------------------- bad content


def test_non_utf8_is_an_error_naming_file_and_line_unless_replace(tmp_path):
    path = _write_bytes(tmp_path / "c.txt", b"good\nbad \xff byte\n")
    with pytest.raises(PipelineError, match=r"c\.txt:2: invalid UTF-8.*encoding_errors=replace"):
        list(iter_documents(str(path), CorpusConfig()))
    docs = list(iter_documents(str(path), CorpusConfig(encoding_errors="replace")))
    assert docs == ["good", "bad \ufffd byte"]


def test_non_utf8_in_csv_names_the_line(tmp_path):
    path = _write_bytes(tmp_path / "c.csv", b"text\nfine\n\xc3\x28\n")
    with pytest.raises(PipelineError, match=r"c\.csv:3: invalid UTF-8"):
        list(iter_documents(str(path), CorpusConfig()))


@pytest.mark.parametrize("name", ["c.txt", "c.jsonl", "c.csv"])
def test_overlong_line_is_an_error_naming_the_line(tmp_path, name):
    path = write_corpus(tmp_path / name, ["short", "x" * 200])
    line = {"c.txt": 2, "c.jsonl": 2, "c.csv": 3}[name]
    with pytest.raises(PipelineError, match=rf"{name}:{line}: .*longer than corpus.max_line_bytes=100"):
        list(iter_documents(str(path), CorpusConfig(max_line_bytes=100)))


def test_overlong_paragraph_names_its_first_line(tmp_path):
    path = _write_bytes(tmp_path / "c.txt", b"ok\n\n" + b"forty bytes of text in one line........\n" * 5)
    with pytest.raises(PipelineError, match=r"c\.txt:3: document"):
        list(iter_documents(str(path), CorpusConfig(doc_boundary="blank_line", max_line_bytes=100)))


def test_a_line_of_exactly_the_limit_is_fine(tmp_path):
    path = _write_bytes(tmp_path / "c.txt", b"y" * 100 + b"\r\n" + b"z\n")
    assert list(iter_documents(str(path), CorpusConfig(max_line_bytes=100))) == ["y" * 100, "z"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a"}\n{"text": \n', r"c\.jsonl:2: malformed JSON"),
        ('{"text": "a"}\n["a list"]\n', r"c\.jsonl:2: expected a JSON object"),
        ('{"text": 12}\n', r"c\.jsonl:1: 'text' is not text \(got int\)"),
        ('{"body": "a"}\n', r"c\.jsonl:1: no key 'text' \(keys: body\)"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        list(iter_documents(str(path), CorpusConfig()))


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\nfine,1\nbroken\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"c\.csv:3: 1 fields, header has 2"):
        list(iter_documents(str(path), CorpusConfig()))


def test_parquet_column_that_is_not_text(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(PipelineError, match=r"c\.parquet: column 'text' has type int64, not string"):
        list(iter_documents(str(path), CorpusConfig()))


@pytest.mark.parametrize("name", ["c.parquet", "c.txt.gz"])
def test_corrupt_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b\x08\x00garbage" if name.endswith(".gz") else b"not parquet at all")
    with pytest.raises(PipelineError, match=rf"{name}"):
        list(iter_documents(str(path), CorpusConfig()))


def test_hub_name_offline_fails_fast_with_advice():
    # conftest sets HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 for every test
    start = time.monotonic()
    with pytest.raises(PipelineError, match=r"(?s)hub dataset.*unreachable.*local files"):
        list(iter_documents("hf://nobody/no-such-dataset", CorpusConfig()))
    assert time.monotonic() - start < 60
