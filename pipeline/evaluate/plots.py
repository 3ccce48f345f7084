"""``pipeline evaluate``'s pictures: ``results.png`` (bar chart) and TensorBoard scalars of the summary.

Called by the evaluate stage with results.json's content::

    write_bar_chart(results, out / "results.png")
    write_tensorboard(results, out / "tensorboard")

The chart has one group of bars per task (and the average): each model's mean score with its seed
standard deviation as an error bar, and the majority baseline as a hatched grey bar.  The scalars
are ``<task>/<model>/score`` (mean; ``score_std``, ``score_by_seed`` with the seed as the step),
``<task>/<model>/<metric>``, ``<task>/majority/score`` and ``<task>/<model>-<other>/difference``.
Both files are rendered without a display (matplotlib's Agg canvas, no pyplot state).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.evaluate.suite import AVERAGE
from pipeline.io import replace_dir

__all__ = ["write_bar_chart", "write_tensorboard"]


def _bars(results: dict) -> tuple[list[str], dict[str, tuple[list[float], list[float]]], list[float]]:
    """Task labels, per model (means, stds), majority scores; a missing value is NaN (no bar)."""
    tasks = list(results["summary"])
    per_model = {}
    for model in results["models"]:
        stats = [results["summary"][t]["models"][model]["score"] for t in tasks]
        means = [s["mean"] if s["n"] else np.nan for s in stats]
        stds = [s["std"] if s["n"] else 0.0 for s in stats]
        per_model[model] = (means, stds)
    majority = [results["summary"][t]["majority"]["score"] for t in tasks]
    return tasks, per_model, [np.nan if m is None else m for m in majority]


def write_bar_chart(results: dict, path: Path) -> None:
    """results.png: model scores (seed error bars) vs the majority baseline, per task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, per_model, majority = _bars(results)
    groups = len(per_model) + 1
    width = 0.8 / groups
    x = np.arange(len(tasks))
    fig = Figure(figsize=(max(6.0, 1.6 * len(tasks) + 2), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, (model, (means, stds)) in enumerate(per_model.items()):
        ax.bar(x + k * width, means, width, yerr=stds, capsize=3, label=model)
    ax.bar(
        x + (groups - 1) * width, majority, width, color="0.8", hatch="//", edgecolor="0.5", label="majority"
    )
    ax.set_xticks(x + width * (groups - 1) / 2, [t if t != AVERAGE else "average" for t in tasks])
    ax.set_ylabel("validation score (mean ± std over seeds)")
    ax.set_title(f"pipeline evaluate: {results['suite']} (seeds {', '.join(map(str, results['seeds']))})")
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.legend(fontsize="small", ncols=min(groups, 4))
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def _scalars(results: dict) -> list[tuple[str, float, int]]:
    """(tag, value, step) of every summary number."""
    out = []
    for task, row in results["summary"].items():
        for model, summary in row["models"].items():
            score = summary["score"]
            if score["n"]:
                out += [
                    (f"{task}/{model}/score", score["mean"], 0),
                    (f"{task}/{model}/score_std", score["std"], 0),
                ]
                out += [(f"{task}/{model}/score_by_seed", v, int(s)) for s, v in score["by_seed"].items()]
            for metric, stat in summary.get("metrics", {}).items():
                if stat["n"]:
                    out.append((f"{task}/{model}/{metric}", stat["mean"], 0))
        if row["majority"]["score"] is not None:
            out.append((f"{task}/majority/score", row["majority"]["score"], 0))
        first = next(iter(results["models"]))
        for other, diff in row["differences"].items():
            if diff["n"]:
                out.append((f"{task}/{first}-{other}/difference", diff["mean"], 0))
    return out


def write_tensorboard(results: dict, directory: Path) -> None:
    """The summary as TensorBoard scalars in ``directory`` (replaced whole, so reruns do not pile up)."""
    from torch.utils.tensorboard import SummaryWriter

    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(staging))
    try:
        for tag, value, step in _scalars(results):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    replace_dir(staging, directory)
