"""The majority baseline of a fine-tuning task, scored by the task's own metric functions.

Called by the evaluate stage before any training (it also tells which metrics a task produces, so a
suite asking for one it does not is an error up front) and when the tables are built::

    baseline = majority_baseline("classification", cell_config.data)
    baseline.metrics     # {"accuracy": 0.509, "f1": 0.675, "f1_macro": 0.337, "mcc": 0.0}
    baseline.produced    # the metric names a fine-tuning run of this task reports (+ "loss")

The rule: predict, for every validation example, what is most frequent in the *training* labels
(ties: the first label in label order); regression predicts the training mean (its correlations are
0 by definition: only ``mse`` says something); NER tags every word with the most frequent training
tag ("O": no entity found, so precision / recall / F1 are 0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.finetune import (
    classification_metrics,
    eval_scalars,
    load_ner_splits,
    load_splits,
    ner_metrics,
    regression_metrics,
)

__all__ = ["Baseline", "majority_baseline"]


@dataclass(frozen=True)
class Baseline:
    prediction: str  # what it predicts for every example (label, mean or tag)
    metrics: dict[str, float]  # validation metrics, names without "eval/"
    produced: frozenset[str]  # every metric a fine-tuning run of the task reports


def _flat(metrics: dict) -> dict[str, float]:
    """The names a fine-tuning run logs (``eval_scalars``, without ``eval/``); ``loss`` is added there."""
    return {k.removeprefix("eval/"): v for k, v in eval_scalars(metrics, 0.0, 0).items() if k != "eval/loss"}


def _classification(data) -> Baseline:
    splits = load_splits(data, "classification")
    counts = Counter(int(e.label) for e in splits.train)
    top = max(range(len(splits.label_names)), key=lambda k: (counts[k], -k))
    gold = [int(e.label) for e in splits.validation]
    metrics = _flat(classification_metrics([top] * len(gold), gold, len(splits.label_names)))
    return Baseline(f"label {splits.label_names[top]!r}", metrics, frozenset(metrics) | {"loss"})


def _regression(data) -> Baseline:
    splits = load_splits(data, "regression")
    mean = float(np.mean([float(e.label) for e in splits.train]))
    gold = [float(e.label) for e in splits.validation]
    metrics = _flat(regression_metrics([mean] * len(gold), gold))
    return Baseline(f"the training mean {mean:.4g}", metrics, frozenset(metrics) | {"loss"})


def _ner(data) -> Baseline:
    splits = load_ner_splits(data)
    top = Counter(tag for s in splits.train for tag in s.tags).most_common(1)[0][0]
    gold = [s.tags for s in splits.validation]
    metrics = _flat(ner_metrics([[top] * len(tags) for tags in gold], gold))
    # per-type scores exist for the types in the data (a run also reports types it wrongly predicts)
    kinds = sorted({t[2:] for s in splits.train + splits.validation for t in s.tags if t != "O"})
    per_type = {f"{k}/{m}" for k in kinds for m in ("precision", "recall", "f1", "support")}
    produced = frozenset({"precision", "recall", "f1", "loss"} | per_type)
    return Baseline(f"tag {top!r} everywhere", metrics, produced)


def majority_baseline(task_type: str, data) -> Baseline:
    """The baseline of a task whose ``data`` section (FinetuneDataConfig) reads its files."""
    return {"classification": _classification, "regression": _regression, "ner": _ner}[task_type](data)
