"""pipeline/text/hub.py: with the hub unreachable, hub datasets come from the local mirror (one warning
line saying which file), and without a mirror the error says so.  conftest makes the hub offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import from_dict
from pipeline.console import PipelineWarning
from pipeline.errors import PipelineError
from pipeline.finetune import FinetuneDataConfig, load_splits, open_rows
from pipeline.text import MIRROR, CorpusConfig, iter_documents, mirror_roots
from pipeline.text.hub import REPO_ROOT
from tests.helpers import ROOT

WIKITEXT = CorpusConfig(hub_config="wikitext-2-raw-v1", hub_split="train")


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A small mirror in the real layout: WikiText-2 train, CoLA train/dev (no header), RTE dev."""
    root = tmp_path / "mirror"
    (root / "wikitext-2").mkdir(parents=True)
    (root / "wikitext-2" / "train.txt").write_text(" \n = Title = \n \n the cat sat . \n a dog ran . \n")
    (root / "glue" / "CoLA").mkdir(parents=True)
    (root / "glue" / "CoLA" / "train.tsv").write_text("gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n")
    (root / "glue" / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tA dog ran.\n")
    (root / "glue" / "RTE").mkdir(parents=True)
    (root / "glue" / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tA cat is there.\tentailment\n"
        "1\tA dog ran.\tNo dog.\tnot_entailment\n"
    )
    monkeypatch.setenv("PIPELINE_DATA", str(root))
    return root


def glue(config: str, columns: list[str], validation: str = "nyu-mll/glue:validation") -> FinetuneDataConfig:
    return from_dict(
        FinetuneDataConfig,
        {
            "train": "nyu-mll/glue:train",
            "validation": validation,
            "hub_config": config,
            "text_columns": columns,
        },
    )


def test_corpus_reads_the_local_copy_and_says_which(mirror):
    with pytest.warns(
        PipelineWarning, match=r"wikitext.*local copy .*wikitext-2/train.txt.*tokenized variant"
    ):
        docs = list(iter_documents("Salesforce/wikitext", WIKITEXT))
    assert docs == [" = Title = ", " the cat sat . ", " a dog ran . "]


def test_tables_read_the_local_copy_under_the_hub_columns_and_labels(mirror):
    with pytest.warns(PipelineWarning, match=r"glue/CoLA/train.tsv"):
        splits = load_splits(glue("cola", ["sentence"]), "classification")  # hub column names
    assert [(e.text, e.label) for e in splits.train] == [("The cat sat.", 1), ("Cat the sat.", 0)]
    assert [(e.text, e.label) for e in splits.validation] == [("A dog ran.", 1)]
    rte = open_rows("glue:validation", hub_config="rte", split="validation")  # the older hub name
    assert rte.name == str(mirror / "glue" / "RTE" / "dev.tsv")  # errors name the local file and line
    rows = [record for _, record in rte.rows]
    assert [r["label"] for r in rows] == ["0", "1"]  # the hub's class ids for entailment / not_entailment
    assert rows[0]["sentence1"] == "A cat sat." and rows[0]["idx"] == "0"


def test_the_hub_is_asked_once_per_process(mirror, monkeypatch):
    import datasets

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.warns(PipelineWarning):
        load_splits(glue("cola", ["sentence"]), "classification")
    assert len(calls) == 1  # the validation split went straight to the mirror


def test_no_mirror_fails_as_before_naming_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA", str(tmp_path / "empty"))
    with pytest.raises(
        PipelineError, match=r"(?s)hub dataset.*unreachable.*no local copy.*empty.*local files"
    ):
        list(iter_documents("Salesforce/wikitext", WIKITEXT))
    with pytest.raises(PipelineError, match=r"unreachable.*no local copy.*data.train"):
        load_splits(glue("sst2", ["sentence"]), "classification")


def test_a_wrong_name_is_not_taken_for_an_unreachable_hub(mirror, monkeypatch):
    import datasets

    def wrong_split(*args, **kwargs):
        raise ValueError("Unknown split 'validaton'")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(datasets, "load_dataset", wrong_split)
    with pytest.raises(PipelineError, match=r"Unknown split.*may be wrong"):
        load_splits(glue("cola", ["sentence"]), "classification")


def test_mirror_roots(monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA", "/some/where")
    assert mirror_roots() == [Path("/some/where")]
    monkeypatch.delenv("PIPELINE_DATA")
    assert mirror_roots() == [REPO_ROOT.parent / "shared" / "data", Path("../shared/data")]
    assert REPO_ROOT == ROOT


def test_every_mirror_entry_reads_from_the_real_data(shared_data, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA", str(shared_data))
    from pipeline.text import find_local_copy

    for (name, config, split), entry in MIRROR.items():
        local = find_local_copy(name, config, split)
        assert local is not None, f"{entry.path} is missing under {shared_data}"
        if local.path.suffix == ".tsv":
            rows = open_rows(f"{name}:{split}", hub_config=config, split=split).rows
            records = [r for _, r in rows]
            assert records and all(isinstance(r, dict) for r in records), (name, config, split)
            assert set(records[0]) == set(entry.columns)
            if "label" in entry.columns:
                assert {r["label"] for r in records} == {"0", "1"}, (name, config, split)


def test_the_tokenizer_stage_says_once_which_copy_it_reads(mirror, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_DATA": str(mirror)}
    args = ["input=[Salesforce/wikitext]", "corpus.hub_config=wikitext-2-raw-v1", "vocab_size=40"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "tokenizer",
            *args,
            f"output_dir={tmp_path / 'tok'}",
            "min_frequency=1",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(mirror / "wikitext-2" / "train.txt") in warnings[0], proc.stderr
