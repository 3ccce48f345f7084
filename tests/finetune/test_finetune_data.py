"""Tests for pipeline.finetune.data / tables: real GLUE files, bad rows, tensors, padding."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, from_dict
from pipeline.errors import PipelineError
from pipeline.finetune import (
    Example,
    FinetuneDataConfig,
    build_label_set,
    load_splits,
    read_table,
)


def data_cfg(**values) -> FinetuneDataConfig:
    values.setdefault("train", "unused.tsv")
    values.setdefault("validation", "unused.tsv")
    return from_dict(FinetuneDataConfig, values)


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- real GLUE files

GLUE = {
    # task: (config values relative to the data dir, train size/labels, dev size/labels, test size, label names)
    "sst2": (
        {"train": "sst2/train.tsv", "validation": "sst2/dev.tsv", "test": "sst2/test.tsv"},
        67349,
        {"1": 37569, "0": 29780},
        872,
        {"1": 444, "0": 428},
        1821,
        ["0", "1"],
    ),
    "cola": (
        {
            "train": "glue/CoLA/train.tsv",
            "validation": "glue/CoLA/dev.tsv",
            "test": "glue/CoLA/test.tsv",
            "header": False,
            "text_columns": ["3"],
            "label_column": "1",
            "test_header": True,
            "test_text_columns": ["sentence"],
        },
        8551,
        {"1": 6023, "0": 2528},
        1043,
        {"1": 721, "0": 322},
        1063,
        ["0", "1"],
    ),
    "mrpc": (
        {
            "train": "glue/MRPC/train.tsv",
            "validation": "glue/MRPC/dev.tsv",
            "test": "glue/MRPC/test.tsv",
            "text_columns": ["#1 String", "#2 String"],
            "label_column": "Quality",
        },
        3668,
        {"1": 2474, "0": 1194},
        408,
        {"1": 279, "0": 129},
        1725,
        ["0", "1"],
    ),
    "rte": (
        {
            "train": "glue/RTE/train.tsv",
            "validation": "glue/RTE/dev.tsv",
            "test": "glue/RTE/test.tsv",
            "text_columns": ["sentence1", "sentence2"],
        },
        2490,
        {"entailment": 1249, "not_entailment": 1241},
        277,
        {"entailment": 146, "not_entailment": 131},
        3000,
        ["entailment", "not_entailment"],
    ),
}


@pytest.mark.parametrize("task", list(GLUE))
def test_real_glue_files(shared_data, task):
    values, n_train, train_dist, n_dev, dev_dist, n_test, names = GLUE[task]
    cfg = data_cfg(
        **{k: str(shared_data / v) if k in ("train", "validation", "test") else v for k, v in values.items()}
    )
    splits = load_splits(cfg, "classification")
    assert splits.label_names == names
    for examples, size, dist in ((splits.train, n_train, train_dist), (splits.validation, n_dev, dev_dist)):
        assert len(examples) == size
        assert Counter(names[e.label] for e in examples) == dist
        assert all(e.text and (e.text_pair is not None) == (len(cfg.text_columns) == 2) for e in examples)
    assert len(splits.test) == n_test and all(e.label is None for e in splits.test)
    assert [e.index for e in splits.test[:3]] == ["0", "1", "2"]  # the files' own index column
    assert splits.stats["train"]["skipped"] == 0


def test_real_row_contents(shared_data):
    cola = data_cfg(header=False, text_columns=["3"], label_column="1")
    dev, _ = read_table(str(shared_data / "glue/CoLA/dev.tsv"), cola, label_names=["0", "1"])
    assert dev[-1].text == "John talked to Bill about himself."  # last line has no newline
    assert dev[-1].line == 1043
    mrpc = data_cfg(text_columns=["3", "4"], label_column="0")  # indices work with a header too
    train, _ = read_table(str(shared_data / "glue/MRPC/train.tsv"), mrpc)
    assert train[0].text.startswith(
        'Amrozi accused his brother , whom he called " the witness "'
    )  # bare quotes kept
    sst, _ = read_table(str(shared_data / "sst2/dev.tsv"), data_cfg())
    assert sst[0].text == "it 's a charming and often affecting journey ."  # trailing space stripped


# ----------------------------------------------------------------------------- bad input

BAD_ROWS = [
    # (file content, message fragment, line, skip reason)
    (
        "sentence\tlabel\ngood one\t1\ntoo\tmany\tcolumns\n",
        "expected 2 tab-separated columns, found 3",
        3,
        "wrong_column_count",
    ),
    ("sentence\tlabel\ngood one\t1\n  \t0\n", "empty text in column 'sentence'", 3, "empty_text"),
    ("sentence\tlabel\ngood one\t1\nno label here\t\n", "missing label", 3, "missing_label"),
    (
        "sentence\tlabel\n\ngood one\t1\nunseen\t7\n",
        "label '7' is not in the training label set",
        4,
        "unknown_label",
    ),
]


@pytest.mark.parametrize("content,fragment,line,reason", BAD_ROWS)
def test_bad_rows_error_or_skip(tmp_path, content, fragment, line, reason):
    path = write(tmp_path / "bad.tsv", content)
    with pytest.raises(PipelineError, match=f"{path}:{line}: .*{fragment}"):
        read_table(path, data_cfg(), label_names=["0", "1"])
    examples, stats = read_table(path, data_cfg(skip_bad_rows=True), label_names=["0", "1"])
    assert [e.text for e in examples] == ["good one"]
    assert stats["skipped"] == 1 and stats["skipped_reasons"] == {reason: 1}
    assert stats["first_skipped"][0].startswith(f"{path}:{line}:")


def test_unseen_validation_label_and_regression_labels(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na\tpos\nb\tneg\n")
    val = write(tmp_path / "dev.tsv", "sentence\tlabel\na\tpos\nb\tneutral\n")
    with pytest.raises(
        PipelineError, match=r"dev.tsv:3: label 'neutral' is not in the training label set \['neg', 'pos'\]"
    ):
        load_splits(data_cfg(train=train, validation=val), "classification")
    reg = write(tmp_path / "reg.tsv", "sentence\tlabel\na\t3.5\nb\t-1\nc\thigh\n")
    with pytest.raises(PipelineError, match=r"reg.tsv:4: label 'high' is not a number"):
        read_table(reg, data_cfg(), "regression")
    examples, _ = read_table(reg, data_cfg(skip_bad_rows=True), "regression")
    assert [e.label for e in examples] == [3.5, -1.0]


def test_empty_files_and_missing_columns(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    header_only = write(tmp_path / "dev.tsv", "sentence\tlabel\n")
    with pytest.raises(PipelineError, match="dev.tsv: no usable examples .*no data rows"):
        load_splits(data_cfg(train=train, validation=header_only), "classification")
    with pytest.raises(PipelineError, match="empty.tsv: the file is empty"):
        read_table(write(tmp_path / "empty.tsv", ""), data_cfg())
    all_bad = write(tmp_path / "bad.tsv", "sentence\tlabel\n\t0\n")
    with pytest.raises(PipelineError, match="all 1 rows were bad"):
        read_table(all_bad, data_cfg(skip_bad_rows=True))
    with pytest.raises(
        PipelineError,
        match=r"column 'text' \(data.text_columns\) not found; the columns are \['sentence', 'label'\]",
    ):
        read_table(train, data_cfg(text_columns=["text"]))
    with pytest.raises(PipelineError, match="data file not found"):
        read_table(str(tmp_path / "nope.tsv"), data_cfg())
    with pytest.raises(PipelineError, match="unsupported file type '.xlsx'"):
        read_table(write(tmp_path / "x.xlsx", "a"), data_cfg())
    (tmp_path / "latin1.tsv").write_bytes(b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
    with pytest.raises(PipelineError, match="latin1.tsv:3: invalid UTF-8"):
        read_table(str(tmp_path / "latin1.tsv"), data_cfg())
    with pytest.raises(PipelineError, match="at least 2 labels"):
        load_splits(
            data_cfg(train=write(tmp_path / "one.tsv", "sentence\tlabel\na\t1\n"), validation=train),
            "classification",
        )


def test_config_checks():
    with pytest.raises(ConfigError, match="one column or two"):
        data_cfg(text_columns=["a", "b", "c"])
    with pytest.raises(ConfigError, match="missing required config key 'validation'"):
        from_dict(FinetuneDataConfig, {"train": "x.tsv"})
    assert data_cfg(text_columns=3).text_columns == ["3"]  # an int index from YAML


# ----------------------------------------------------------------------------- other formats


def test_csv_jsonl_parquet_and_explicit_labels(tmp_path):
    csv_path = write(
        tmp_path / "t.csv", 'id,premise,hypothesis,label\n7,"a, quoted ""one""",b,yes\n8,c,d,no\n'
    )
    cfg = data_cfg(text_columns=["premise", "hypothesis"], index_column="id")
    rows, _ = read_table(csv_path, cfg)
    assert (rows[0].text, rows[0].text_pair, rows[0].label, rows[0].index) == (
        'a, quoted "one"',
        "b",
        "yes",
        "7",
    )
    jsonl = write(tmp_path / "t.jsonl", '{"text": "x", "label": 1}\n\n{"text": "y", "label": 0.0}\n[1]\n')
    with pytest.raises(PipelineError, match="t.jsonl:4: expected a JSON object"):
        read_table(jsonl, data_cfg(text_columns=["text"]))
    rows, stats = read_table(jsonl, data_cfg(text_columns=["text"], skip_bad_rows=True))
    assert [(e.label, e.line) for e in rows] == [("1", 1), ("0", 3)] and stats["skipped_reasons"] == {
        "invalid_json": 1
    }
    pq.write_table(pa.table({"text": ["p", "q", ""], "score": [0.5, 1.5, 2.0]}), tmp_path / "t.parquet")
    with pytest.raises(PipelineError, match=r"t.parquet: row 3: empty text"):
        read_table(
            str(tmp_path / "t.parquet"), data_cfg(text_columns=["text"], label_column="score"), "regression"
        )
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na\tlow\nb\thigh\n")
    splits = load_splits(data_cfg(train=train, validation=train, labels=["low", "high"]), "classification")
    assert splits.label_names == ["low", "high"] and [e.label for e in splits.train] == [0, 1]


def test_build_label_set_order():
    def ex(labels):
        return [Example("t", None, label, 1, "0") for label in labels]

    assert build_label_set(ex(["10", "2", "-1", "2"])) == ["-1", "2", "10"]
    assert build_label_set(ex(["b", "a", "10"])) == ["10", "a", "b"]


def test_hub_dataset_paths(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config=None, split=None, streaming=False):
        calls.append((name, config, split))
        if name == "offline/data":
            raise ConnectionError("no network")
        return datasets.Dataset.from_dict({"sentence": ["s1", "s2"], "label": [0, 1], "idx": [10, 11]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = data_cfg(train="nyu-mll/glue", validation="nyu-mll/glue:dev_matched", hub_config="sst2")
    splits = load_splits(cfg, "classification")
    assert calls == [("nyu-mll/glue", "sst2", "train"), ("nyu-mll/glue", "sst2", "dev_matched")]
    assert [(e.text, e.label, e.index) for e in splits.validation] == [("s1", 0, "10"), ("s2", 1, "11")]
    with pytest.raises(
        PipelineError, match="taken as a Hugging Face hub dataset.*ConnectionError: no network"
    ):
        read_table("offline/data", cfg)


def test_line_endings_long_fields_and_odd_characters(tmp_path):
    crlf = tmp_path / "crlf.tsv"
    crlf.write_bytes(b"sentence\tlabel\r\nfirst\t1\r\nsecond\t0\r\n")
    rows, _ = read_table(str(crlf), data_cfg(), label_names=["0", "1"])
    assert [(e.text, e.label, e.line) for e in rows] == [("first", 1, 2), ("second", 0, 3)]
    jsonl = write(
        tmp_path / "sep.jsonl", '{"sentence": "a\u2028b", "label": 1}\n{"sentence": "c", "label": 0}\n'
    )
    rows, _ = read_table(jsonl, data_cfg())
    assert [(e.text, e.line) for e in rows] == [("a\u2028b", 1), ("c", 2)]  # U+2028 is not a line break
    huge = write(tmp_path / "huge.tsv", "sentence\tlabel\nok\t1\n" + "x" * 200_000 + "\t0\n")
    with pytest.raises(PipelineError, match=r"huge.tsv:3: unreadable row \(field larger than field limit"):
        read_table(huge, data_cfg())
