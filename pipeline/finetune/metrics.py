"""Evaluation metrics for fine-tuning: classification, regression and entity-level NER.

Called by the finetune stage on each evaluation; pure functions of predictions and gold labels that
return ``{metric name: float}`` (no downloads, no ``evaluate.load``).  Degenerate inputs give 0.0
rather than NaN (e.g. the correlation of a constant prediction), so every value is valid JSON and
comparable when picking the best checkpoint.

* :func:`classification_metrics`: accuracy, macro F1 over all classes, binary F1 of class 1 when
  there are two classes, Matthews correlation (multi-class form, as scikit-learn).
* :func:`regression_metrics`: Pearson, Spearman, mean squared error.
* :func:`ner_metrics`: micro precision / recall / F1 over entity spans plus a per-type table.
  Spans follow seqeval's *strict* IOB2 mode (``mode="strict", scheme=IOB2``): a span is ``B-X``
  followed by ``I-X`` tags; an ``I-X`` that does not continue a span of type X starts nothing (the
  prediction is invalid IOB2 and earns no credit).  On valid IOB2 sequences this is also exactly
  seqeval's default (conlleval) mode.  A predicted span counts only if type, start and end match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _as_arrays(preds: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(
            f"predictions {preds.shape} and labels {labels.shape} must be 1-d and of equal length"
        )
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, labels


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _safe_div(2 * precision * recall, precision + recall)


def confusion_matrix(preds: Sequence[int], labels: Sequence[int], num_labels: int) -> np.ndarray:
    """``m[gold, predicted]`` counts."""
    preds, labels = _as_arrays(preds, labels)
    m = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(m, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return m


def classification_metrics(preds: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """accuracy, f1_macro (every class in 0..num_labels-1; a class never seen nor predicted scores 0),
    f1 (class 1 as positive; only when num_labels == 2), mcc."""
    m = confusion_matrix(preds, labels, num_labels).astype(np.float64)
    true_pos = np.diag(m)
    predicted, actual, total = m.sum(axis=0), m.sum(axis=1), m.sum()
    per_class_f1 = [
        _f1(_safe_div(true_pos[k], predicted[k]), _safe_div(true_pos[k], actual[k]))
        for k in range(num_labels)
    ]
    out = {"accuracy": _safe_div(true_pos.sum(), total), "f1_macro": float(np.mean(per_class_f1))}
    if num_labels == 2:
        out["f1"] = per_class_f1[1]
    # Matthews correlation, multi-class (Gorodkin 2004), the formula scikit-learn uses
    cov_yp = true_pos.sum() * total - predicted @ actual
    cov_pp = total**2 - predicted @ predicted
    cov_yy = total**2 - actual @ actual
    out["mcc"] = _safe_div(cov_yp, np.sqrt(cov_pp * cov_yy))
    return out


def regression_metrics(preds: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """pearson, spearman (0.0 when either side is constant), mse."""
    preds, labels = _as_arrays(preds, labels)
    preds, labels = preds.astype(np.float64), labels.astype(np.float64)
    constant = np.ptp(preds) == 0 or np.ptp(labels) == 0 or preds.size < 2
    return {
        "pearson": 0.0 if constant else float(stats.pearsonr(preds, labels)[0]),
        "spearman": 0.0 if constant else float(stats.spearmanr(preds, labels)[0]),
        "mse": float(np.mean((preds - labels) ** 2)),
    }


def extract_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans ``(type, start, end)`` (end exclusive) of an IOB2 tag sequence, strict mode."""
    spans = set()
    i = 0
    while i < len(tags):
        tag = tags[i]
        if tag.startswith("B-"):
            kind, end = tag[2:], i + 1
            while end < len(tags) and tags[end] == "I-" + kind:
                end += 1
            spans.add((kind, i, end))
            i = end
        elif tag == "O" or tag.startswith("I-"):
            i += 1
        else:
            raise ValueError(f"tag {tag!r} is not O, B-TYPE or I-TYPE")
    return spans


def ner_metrics(pred_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> dict:
    """precision, recall, f1 (micro over entities) and per_type {type: {precision, recall, f1, support}}."""
    if len(pred_tags) != len(gold_tags):
        raise ValueError(f"{len(pred_tags)} predicted sentences vs {len(gold_tags)} gold sentences")
    hits, n_pred, n_gold = Counter(), Counter(), Counter()
    for sentence, (pred, gold) in enumerate(zip(pred_tags, gold_tags)):
        if len(pred) != len(gold):
            raise ValueError(f"sentence {sentence}: {len(pred)} predicted tags vs {len(gold)} gold tags")
        pred_spans, gold_spans = extract_spans(pred), extract_spans(gold)
        n_pred.update(kind for kind, _, _ in pred_spans)
        n_gold.update(kind for kind, _, _ in gold_spans)
        hits.update(kind for kind, _, _ in pred_spans & gold_spans)
    per_type = {}
    for kind in sorted(n_gold | n_pred):
        p, r = _safe_div(hits[kind], n_pred[kind]), _safe_div(hits[kind], n_gold[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": n_gold[kind]}
    p = _safe_div(sum(hits.values()), sum(n_pred.values()))
    r = _safe_div(sum(hits.values()), sum(n_gold.values()))
    return {"precision": p, "recall": r, "f1": _f1(p, r), "per_type": per_type}
