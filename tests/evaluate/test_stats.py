"""pipeline/evaluate/stats.py on constructed numbers: seed statistics, scores, the paired noise rule.

Expected values are computed here from the definitions (t = mean / (sd / sqrt(n)), p from Student's
t with n - 1 degrees of freedom), not through the module's own calls."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from pipeline.evaluate import AVERAGE, Task, mean_std, paired_difference, summarize
from pipeline.evaluate.baseline import Baseline


def two_sided_p(diffs: list[float]) -> float:
    t = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    return 2 * scipy_stats.t.sf(abs(t), len(diffs) - 1)


def test_a_consistent_gain_is_beyond_seed_noise():
    ours, theirs = {0: 0.80, 1: 0.82, 2: 0.81}, {0: 0.70, 1: 0.71, 2: 0.72}
    diff = paired_difference(ours, theirs)
    diffs = [0.80 - 0.70, 0.82 - 0.71, 0.81 - 0.72]
    assert diff["values"] == pytest.approx(diffs)
    assert diff["mean"] == pytest.approx(statistics.mean(diffs))
    assert diff["std"] == pytest.approx(statistics.stdev(diffs))
    assert diff["p_value"] == pytest.approx(two_sided_p(diffs)) and diff["p_value"] < 0.05
    assert diff["verdict"] == "beyond seed noise" and diff["n"] == 3


def test_a_gain_smaller_than_its_spread_is_within_seed_noise():
    # the same mean gain (+0.02) as a noisy pair: +0.05, -0.03, +0.04
    diff = paired_difference({0: 0.75, 1: 0.70, 2: 0.74}, {0: 0.70, 1: 0.73, 2: 0.70})
    assert diff["p_value"] == pytest.approx(two_sided_p([0.05, -0.03, 0.04]))
    assert diff["p_value"] > 0.05 and diff["verdict"] == "within seed noise"


def test_the_rule_at_three_seeds_needs_about_2_5_standard_deviations():
    """Mean difference = k x the sd of the differences: beyond noise from k ~ 2.48 on (t > 4.30)."""
    for k, verdict in ((2.3, "within seed noise"), (2.7, "beyond seed noise")):
        sd = 0.01
        diffs = [k * sd - sd, k * sd, k * sd + sd]  # sample sd exactly 0.01
        diff = paired_difference(dict(enumerate(diffs)), {0: 0.0, 1: 0.0, 2: 0.0})
        assert diff["std"] == pytest.approx(sd) and diff["verdict"] == verdict, (k, diff)


def test_pairs_only_the_common_seeds_and_degenerate_cases():
    diff = paired_difference({0: 0.9, 1: 0.8, 5: 0.1}, {0: 0.5, 1: 0.6, 2: 0.0})
    assert diff["seeds"] == [0, 1] and diff["values"] == pytest.approx([0.4, 0.2])
    single = paired_difference({0: 0.9}, {0: 0.5})
    assert single["p_value"] is None and single["verdict"] == "needs >= 2 paired seeds"
    same = paired_difference({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.7})  # identical differences: no noise
    assert same["std"] == pytest.approx(0.0, abs=1e-12) and same["verdict"] == "beyond seed noise"
    equal = paired_difference({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5})
    assert equal["verdict"] == "within seed noise"


def test_mean_std_uses_n_minus_1():
    assert mean_std([0.7, 0.71, 0.69]) == {
        "mean": pytest.approx(0.7),
        "std": pytest.approx(statistics.stdev([0.7, 0.71, 0.69])),
        "n": 3,
    }
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert mean_std([])["mean"] is None


def _cell(task, model, seed, **metrics):
    return {"task": task, "model": model, "seed": seed, "metrics": metrics}


def test_summary_scores_the_glue_way():
    tasks = [
        Task("mrpc", {}, ("f1", "accuracy"), "suite"),
        Task("cola", {}, ("mcc",), "suite"),
        Task("stsb_mse", {}, ("mse",), "suite"),  # lower is better: kept out of the average
    ]
    records = [
        _cell("mrpc", "m", 0, f1=0.80, accuracy=0.70),
        _cell("mrpc", "m", 1, f1=0.90, accuracy=0.80),
        _cell("cola", "m", 0, mcc=0.20),
        _cell("cola", "m", 1, mcc=0.30),
        _cell("stsb_mse", "m", 0, mse=5.0),
        _cell("stsb_mse", "m", 1, mse=4.0),
        _cell("mrpc", "none", 0, f1=0.70, accuracy=0.60),
        _cell("cola", "none", 0, mcc=0.0),
    ]
    baselines = {
        "mrpc": Baseline("label '1'", {"f1": 0.8, "accuracy": 0.68}, frozenset()),
        "cola": Baseline("label '1'", {"mcc": 0.0}, frozenset()),
        "stsb_mse": Baseline("mean", {"mse": 9.0}, frozenset()),
    }
    summary = summarize(tasks, ["m", "none"], records, baselines)
    mrpc = summary["mrpc"]["models"]["m"]
    assert mrpc["score"]["by_seed"] == {0: pytest.approx(0.75), 1: pytest.approx(0.85)}
    assert mrpc["score"]["mean"] == pytest.approx(0.80) and mrpc["metrics"]["f1"]["mean"] == pytest.approx(
        0.85
    )
    assert summary["mrpc"]["majority"]["score"] == pytest.approx(0.74)
    average = summary[AVERAGE]
    assert average["tasks"] == ["mrpc", "cola"]
    # per seed: mean of the task scores (seed 0: (0.75 + 0.20) / 2, seed 1: (0.85 + 0.30) / 2)
    assert average["models"]["m"]["score"]["by_seed"] == {0: pytest.approx(0.475), 1: pytest.approx(0.575)}
    # "none" has seed 0 only on both tasks: the average (and the paired difference) use seed 0 alone
    assert average["models"]["none"]["score"]["by_seed"] == {0: pytest.approx(0.325)}
    assert average["differences"]["none"]["values"] == pytest.approx([0.475 - 0.325])
    assert average["majority"]["score"] == pytest.approx((0.74 + 0.0) / 2)
    assert summary["cola"]["differences"]["none"]["seeds"] == [0]
