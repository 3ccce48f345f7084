"""``pipeline evaluate``'s tables: ``results.md`` and the one-screen summary printed at the end.

Called by the evaluate stage with results.json's content (see :mod:`pipeline.evaluate.results`)::

    write_text(out / "results.md", results_markdown(results))
    console.info(screen_summary(results))

The main table has one row per task and the ``average`` row: the task's score (mean +- std over
seeds) for every model, the majority baseline, and per comparison model the paired difference with
its spread, p-value and verdict.  results.md adds every metric per task and the missing cells.
"""

from __future__ import annotations

from pipeline.evaluate.stats import NOISE_RULE
from pipeline.evaluate.suite import AVERAGE

__all__ = ["results_markdown", "screen_summary"]


def _num(value, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _mean_std(stat: dict, sign: bool = False) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "-"
    return f"{_num(stat['mean'], sign)} ± {stat['std']:.3f}"


def _difference(diff: dict) -> str:
    if diff["n"] == 0:
        return "-"
    p = "" if diff["p_value"] is None else f", p={diff['p_value']:.3g}"
    return f"{_mean_std(diff, sign=True)} (n={diff['n']}{p}): {diff['verdict']}"


def _score_name(row: dict) -> str:
    names = row.get("score_metrics")
    if names is None:
        return "mean of task scores"
    return names[0] if len(names) == 1 else f"mean({', '.join(names)})"


def main_table(results: dict) -> list[list[str]]:
    """Header + one row per task and the average: score per model, majority, differences."""
    models = list(results["models"])
    first = models[0]
    header = ["task", "score", *models, "majority", *[f"{first} - {m}" for m in models[1:]]]
    rows = [header]
    for name, row in results["summary"].items():
        label = f"{AVERAGE} ({', '.join(row['tasks'])})" if name == AVERAGE else name
        cells = [label, _score_name(row)]
        cells += [_mean_std(row["models"][m]["score"]) for m in models]
        cells.append(_num(row["majority"]["score"]))
        cells += [_difference(row["differences"][m]) for m in models[1:]]
        rows.append(cells)
    return rows


def metrics_table(results: dict) -> list[list[str]]:
    """Every metric of every task: mean +- std per model, and the majority baseline's value."""
    models = list(results["models"])
    rows = [["task", "metric", *models, "majority"]]
    for name, row in results["summary"].items():
        if name == AVERAGE:
            continue
        metrics = sorted({k for m in models for k in row["models"][m]["metrics"]})
        for metric in metrics:
            values = [_mean_std(row["models"][m]["metrics"].get(metric, {})) for m in models]
            rows.append([name, metric, *values, _num(row["majority"]["metrics"].get(metric))])
    return rows


def _markdown(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def _models_line(results: dict) -> str:
    parts = [f"`{tag}` = {desc}" for tag, desc in results["models"].items()]
    return "Models: " + "; ".join(parts) + "."


def results_markdown(results: dict) -> str:
    """The whole results.md."""
    cells, missing = results["cells"], results["missing"]
    overrides = results.get("finetune_overrides") or "none"
    lines = [
        f"# pipeline evaluate: {results['suite']}",
        "",
        _models_line(results),
        f"Seeds: {', '.join(map(str, results['seeds']))}. Cells complete: {len(cells)} of "
        f"{len(cells) + len(missing)}. Fine-tuning overrides for every cell: {overrides}.",
        "",
        "Score of each task on its validation split (mean ± std over seeds); majority = predict the "
        "most frequent training label; difference = paired over seeds.",
        "",
        *_markdown(main_table(results)),
        "",
        f"Noise rule: {NOISE_RULE}.",
        "",
        "## Every metric (mean ± std over seeds)",
        "",
        *_markdown(metrics_table(results)),
    ]
    baselines = [
        f"- {t}: {row['majority']['prediction']}" for t, row in results["summary"].items() if t != AVERAGE
    ]
    lines += ["", "## Majority baseline (what it predicts)", "", *baselines]
    if missing:
        lines += ["", "## Missing cells (not in the table)", ""]
        lines += [f"- {m['describe']} -> {m['output_dir']}" for m in missing]
    return "\n".join(lines) + "\n"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def screen_summary(results: dict, output_dir: str) -> str:
    """The one-screen summary printed at the end of ``pipeline evaluate``."""
    missing = results["missing"]
    lines = ["", f"pipeline evaluate: {results['suite']}", "-" * 60, _models_line(results), ""]
    lines += _aligned(main_table(results))
    if missing:
        shown = ", ".join(m["describe"] for m in missing[:4]) + (" ..." if len(missing) > 4 else "")
        lines += ["", f"missing {len(missing)} cell(s): {shown}"]
    lines += [
        "",
        f"noise rule: {NOISE_RULE}",
        f"tables: {output_dir}/results.md, results.json, results.png; tensorboard --logdir {output_dir}/tensorboard",
    ]
    return "\n".join(lines)
