"""Tests for pipeline.finetune.metrics: hand-computed values, and scikit-learn / scipy / seqeval on random inputs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, matthews_corrcoef
from sklearn.metrics import f1_score as sk_f1

from pipeline.finetune import classification_metrics, extract_spans, ner_metrics, regression_metrics


def test_classification_by_hand():
    m = classification_metrics([1, 0, 1, 1, 0], [1, 0, 0, 1, 1], num_labels=2)
    # class 1: tp 2, predicted 3, gold 3 -> f1 2/3; class 0: tp 1, predicted 2, gold 2 -> f1 1/2
    # mcc: tp 2, tn 1, fp 1, fn 1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert m == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "f1_macro": 7 / 12, "mcc": 1 / 6})
    three = classification_metrics([0, 1, 2, 2], [0, 1, 1, 2], num_labels=3)
    assert set(three) == {"accuracy", "f1_macro", "mcc"}  # binary f1 only for two classes
    assert three["accuracy"] == 0.75 and three["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    constant = classification_metrics([1, 1, 1], [0, 1, 1], num_labels=2)
    assert constant["mcc"] == 0.0 and constant["f1"] == pytest.approx(0.8)


@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_classification_matches_sklearn(num_labels):
    rng = np.random.default_rng(num_labels)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        labels, preds = rng.integers(0, num_labels, n), rng.integers(0, num_labels, n)
        if rng.random() < 0.3:
            preds = labels.copy()
        m = classification_metrics(preds.tolist(), labels, num_labels)
        classes = list(range(num_labels))
        assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
        assert m["f1_macro"] == pytest.approx(
            sk_f1(labels, preds, average="macro", labels=classes, zero_division=0)
        )
        assert m["mcc"] == pytest.approx(matthews_corrcoef(labels, preds), abs=1e-12)
        if num_labels == 2:
            assert m["f1"] == pytest.approx(sk_f1(labels, preds, pos_label=1, zero_division=0))


def test_regression_by_hand_and_vs_scipy():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["mse"] == pytest.approx(1 / 3) and m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1])
    assert regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {
        "pearson": 0.0,
        "spearman": 0.0,
        "mse": pytest.approx(2 / 3),
    }
    rng = np.random.default_rng(0)
    for _ in range(10):
        labels = rng.normal(size=30)
        preds = labels + rng.normal(scale=rng.uniform(0.1, 3), size=30)
        m = regression_metrics(preds, labels)
        assert m["pearson"] == pytest.approx(stats.pearsonr(preds, labels)[0])
        assert m["spearman"] == pytest.approx(stats.spearmanr(preds, labels)[0])
        assert m["mse"] == pytest.approx(np.mean((preds - labels) ** 2))
    with pytest.raises(ValueError, match="equal length"):
        regression_metrics([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no predictions"):
        classification_metrics([], [], 2)


def test_extract_spans_strict():
    assert extract_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert extract_spans(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 3)}
    assert extract_spans(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1)}  # I-LOC continues nothing
    assert extract_spans(["O", "I-PER", "I-PER"]) == set()
    with pytest.raises(ValueError, match="not O, B-TYPE or I-TYPE"):
        extract_spans(["PER"])


def test_ner_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    m = ner_metrics(pred, gold)
    # gold 3 spans, predicted 4, matching 2 (PER 0-2, ORG 0-1)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["per_type"]["PER"]["f1"] == 1.0
    assert ner_metrics([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 0"):
        ner_metrics([["O"]], [["O", "O"]])


def random_tags(rng: random.Random, n: int, valid: bool) -> list[str]:
    tags: list[str] = []
    while len(tags) < n:
        kind = rng.choice(["PER", "LOC", "MISC"])
        if rng.random() < 0.4:
            tags.append("O")
        elif valid:
            tags += [f"B-{kind}"] + [f"I-{kind}"] * rng.randint(0, 3)
        else:
            tags.append(rng.choice(["B-", "I-"]) + kind)  # I- anywhere: invalid IOB2 on purpose
    return tags[:n]


@pytest.mark.parametrize("valid", [True, False])
def test_ner_matches_seqeval(valid):
    rng = random.Random(int(valid))
    for _ in range(30):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 8))]
        gold = [random_tags(rng, n, valid=True) for n in lengths]
        pred = [random_tags(rng, n, valid) if rng.random() < 0.7 else list(g) for n, g in zip(lengths, gold)]
        ours = ner_metrics(pred, gold)
        modes = [{"mode": "strict", "scheme": IOB2}] + (
            [{}] if valid else []
        )  # default mode == strict on valid IOB2
        for mode in modes:
            for name, ref in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
                assert ours[name] == pytest.approx(ref(gold, pred, zero_division=0, **mode)), (name, mode)
        report = classification_report(
            gold, pred, output_dict=True, zero_division=0, mode="strict", scheme=IOB2
        )
        assert set(ours["per_type"]) == set(report) - {"micro avg", "macro avg", "weighted avg"}
        for kind, row in ours["per_type"].items():
            ref = report[kind]
            assert [row[k] for k in ("precision", "recall", "f1")] == pytest.approx(
                [ref["precision"], ref["recall"], ref["f1-score"]]
            )
            assert row["support"] == ref["support"]
        assert all(not math.isnan(v) for v in (ours["precision"], ours["recall"], ours["f1"]))
