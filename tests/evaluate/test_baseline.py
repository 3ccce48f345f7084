"""pipeline/evaluate/baseline.py: the majority baseline against hand counts (constructed and real SST-2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.config import from_dict
from pipeline.evaluate import majority_baseline
from pipeline.finetune import FinetuneDataConfig


def data(**keys) -> FinetuneDataConfig:
    return from_dict(FinetuneDataConfig, keys)


def table(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return str(path)


def test_classification_predicts_the_most_frequent_training_label(tmp_path):
    train = table(
        tmp_path / "train.tsv", [("a", "pos"), ("b", "pos"), ("c", "neg"), ("d", "pos"), ("e", "neg")]
    )
    dev = table(tmp_path / "dev.tsv", [("f", "pos"), ("g", "neg"), ("h", "neg"), ("i", "pos"), ("j", "pos")])
    baseline = majority_baseline("classification", data(train=train, validation=dev))
    # training: pos 3, neg 2 -> always "pos"; dev: 3 of 5 are pos
    assert baseline.prediction == "label 'pos'"
    assert baseline.metrics["accuracy"] == pytest.approx(3 / 5)
    # labels sort as ["neg", "pos"]: class 1 = pos; precision 3/5, recall 3/3
    assert baseline.metrics["f1"] == pytest.approx(2 * 0.6 * 1.0 / 1.6)
    assert baseline.metrics["mcc"] == 0.0  # a constant prediction correlates with nothing
    assert baseline.produced == {"accuracy", "f1", "f1_macro", "mcc", "loss"}


def test_a_tie_goes_to_the_first_label_and_multiclass_has_no_binary_f1(tmp_path):
    train = table(tmp_path / "train.tsv", [("a", "2"), ("b", "0"), ("c", "1"), ("d", "1"), ("e", "2")])
    dev = table(tmp_path / "dev.tsv", [("f", "1"), ("g", "2"), ("h", "0")])
    baseline = majority_baseline("classification", data(train=train, validation=dev))
    assert baseline.prediction == "label '1'"  # 1 and 2 tie at 2 each: the first in label order
    assert baseline.metrics["accuracy"] == pytest.approx(1 / 3)
    assert "f1" not in baseline.produced and "f1_macro" in baseline.produced


def test_regression_predicts_the_training_mean(tmp_path):
    train = table(tmp_path / "train.tsv", [("a", "1"), ("b", "2"), ("c", "6")])
    dev = table(tmp_path / "dev.tsv", [("d", "0"), ("e", "3")])
    baseline = majority_baseline("regression", data(train=train, validation=dev))
    assert baseline.prediction == "the training mean 3"
    assert baseline.metrics["mse"] == pytest.approx(((0 - 3) ** 2 + (3 - 3) ** 2) / 2)
    assert baseline.metrics["pearson"] == 0.0 and baseline.metrics["spearman"] == 0.0


def test_ner_tags_everything_o(tmp_path):
    conll = tmp_path / "ner.txt"
    conll.write_text("alice B-PER\nsees O\nparis B-LOC\n\nbob B-PER\nruns O\nfast O\n")
    baseline = majority_baseline("ner", data(train=str(conll), validation=str(conll)))
    assert baseline.prediction == "tag 'O' everywhere"
    assert baseline.metrics["f1"] == 0.0 and baseline.metrics["PER/support"] == 2
    assert {"f1", "precision", "recall", "loss", "LOC/f1", "PER/f1"} <= baseline.produced


def test_real_sst2_majority_matches_a_hand_count(shared_data):
    def labels(path: Path) -> list[str]:
        return [line.rsplit("\t", 1)[1] for line in path.read_text().splitlines()[1:]]

    train, dev = labels(shared_data / "sst2" / "train.tsv"), labels(shared_data / "sst2" / "dev.tsv")
    majority = max(set(train), key=train.count)
    baseline = majority_baseline(
        "classification",
        data(train=str(shared_data / "sst2" / "train.tsv"), validation=str(shared_data / "sst2" / "dev.tsv")),
    )
    assert majority == "1" and baseline.prediction == "label '1'"
    assert baseline.metrics["accuracy"] == pytest.approx(dev.count("1") / len(dev))  # 444 / 872
    assert math.isclose(baseline.metrics["accuracy"], 444 / 872)
