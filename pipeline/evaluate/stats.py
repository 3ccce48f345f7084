"""The numbers of ``pipeline evaluate``'s table: seed statistics, task scores, paired differences.

Pure functions of the cells' metrics (called when the tables are built)::

    summary = summarize(tasks, models, records, baselines)     # results.json's "summary"

* a task's **score** is the mean of its score metrics (GLUE: MRPC's F1 and accuracy), per seed;
* the **average** row is the unweighted mean of the task scores, per seed, over the tasks whose
  score is higher-is-better - GLUE's rule;
* **mean +- std** over seeds: std is the sample standard deviation (n - 1), 0 for one seed;
* a **difference** pairs the seeds both models ran (same seed = same data order); it is "beyond seed
  noise" when a two-sided paired t-test over those seeds gives p < 0.05 (:data:`NOISE_RULE`), else
  "within seed noise".  At 3 seeds (2 degrees of freedom) that needs a mean difference larger than
  4.30 x its standard error, i.e. about 2.5 x the standard deviation of the per-seed differences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from pipeline.evaluate.suite import AVERAGE

__all__ = ["ALPHA", "NOISE_RULE", "mean_std", "paired_difference", "summarize", "task_score"]

ALPHA = 0.05
NOISE_RULE = (
    "paired t-test over seeds (same seed = same data order), two-sided: 'beyond seed noise' when "
    f"p < {ALPHA}, else 'within seed noise'; at 3 seeds the mean difference must exceed ~2.5x the "
    "standard deviation of the per-seed differences"
)
LOWER_IS_BETTER = frozenset({"loss", "mse"})


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}``; std with n - 1 (0.0 for a single value); mean None when empty."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {"mean": None, "std": None, "n": 0}
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    return {"mean": float(data.mean()), "std": std, "n": int(data.size)}


def task_score(metrics: dict[str, float], names: Sequence[str]) -> float:
    """The mean of the named metrics (names without ``eval/``)."""
    return float(np.mean([metrics[name] for name in names]))


def paired_difference(ours: dict[int, float], theirs: dict[int, float]) -> dict:
    """``ours - theirs`` over the seeds both have: mean, std, n, the per-seed values, p and a verdict."""
    seeds = sorted(set(ours) & set(theirs))
    diffs = [ours[s] - theirs[s] for s in seeds]
    out = {**mean_std(diffs), "seeds": seeds, "values": diffs, "p_value": None}
    if len(diffs) < 2:
        out["verdict"] = "needs >= 2 paired seeds"
        return out
    if out["std"] <= 1e-12:  # identical differences (up to rounding): no noise, the t statistic is infinite
        out["p_value"] = 1.0 if abs(out["mean"]) <= 1e-12 else 0.0
    else:
        out["p_value"] = float(stats.ttest_rel([ours[s] for s in seeds], [theirs[s] for s in seeds]).pvalue)
    out["verdict"] = "beyond seed noise" if out["p_value"] < ALPHA else "within seed noise"
    return out


def _model_summary(records: list[dict], metrics: Sequence[str]) -> dict:
    """One model on one task: mean/std of every metric and of the score, over its seeds."""
    names = sorted({k for r in records for k in r["metrics"]})
    per_metric = {n: mean_std([r["metrics"][n] for r in records if n in r["metrics"]]) for n in names}
    scores = {r["seed"]: task_score(r["metrics"], metrics) for r in records}
    return {"score": {**mean_std(list(scores.values())), "by_seed": scores}, "metrics": per_metric}


def _differences(per_model: dict[str, dict], models: Sequence[str]) -> dict:
    first, others = models[0], models[1:]
    return {
        other: paired_difference(per_model[first]["score"]["by_seed"], per_model[other]["score"]["by_seed"])
        for other in others
    }


def _task_summary(task, models: Sequence[str], records: list[dict], baseline) -> dict:
    per_model = {m: _model_summary([r for r in records if r["model"] == m], task.metrics) for m in models}
    return {
        "score_metrics": list(task.metrics),
        "models": per_model,
        "majority": {
            "prediction": baseline.prediction,
            "metrics": baseline.metrics,
            "score": task_score(baseline.metrics, task.metrics),
        },
        "differences": _differences(per_model, models),
    }


def _average(tasks, models: Sequence[str], summary: dict) -> dict:
    """GLUE's average: the unweighted mean of the task scores, per seed where every task has one."""
    names = [t.name for t in tasks if not LOWER_IS_BETTER & set(t.metrics)]
    per_model = {}
    for m in models:
        by_task = [summary[n]["models"][m]["score"]["by_seed"] for n in names]
        seeds = sorted(set.intersection(*(set(s) for s in by_task))) if by_task else []
        scores = {s: float(np.mean([t[s] for t in by_task])) for s in seeds}
        per_model[m] = {"score": {**mean_std(list(scores.values())), "by_seed": scores}}
    majority = [summary[n]["majority"]["score"] for n in names]
    return {
        "tasks": names,
        "models": per_model,
        "majority": {"score": float(np.mean(majority)) if majority else None},
        "differences": _differences(per_model, models),
    }


def summarize(tasks, models: Sequence[str], records: list[dict], baselines: dict) -> dict:
    """results.json's ``summary``: per task (and ``average``) the models' mean/std, majority, differences.

    ``records``: the complete cells, ``{"task", "seed", "model", "metrics"}``; ``baselines``: task
    name -> :class:`~pipeline.evaluate.baseline.Baseline`; ``models``: tags, the evaluated one first."""
    summary = {
        t.name: _task_summary(t, models, [r for r in records if r["task"] == t.name], baselines[t.name])
        for t in tasks
    }
    summary[AVERAGE] = _average(tasks, models, summary)
    return summary
