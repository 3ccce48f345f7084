"""``pipeline evaluate``'s records: what each cell left behind, and the files built from them.

Called by the evaluate stage::

    record = cell_record(cell)                   # None while the cell is not complete
    results = build_results(meta, cells, baselines)
    write_results(results, output_dir)           # results.json, results.md, results.png, tensorboard/

A cell's numbers are its own files, nothing else: the metrics of ``eval_results.json`` (what
``pipeline finetune`` wrote for the model it exported), the steps of ``summary.json``, and the
seconds ``pipeline evaluate`` spent on the cell over all its invocations (``evaluate_cell.json``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from pipeline.config import flatten
from pipeline.evaluate.plots import write_bar_chart, write_tensorboard
from pipeline.evaluate.report import results_markdown
from pipeline.evaluate.stats import NOISE_RULE, summarize
from pipeline.evaluate.suite import Cell
from pipeline.finetune import RESULTS_FILE, finetune_complete
from pipeline.io import write_json, write_text

__all__ = [
    "CELL_FILE",
    "add_cell_seconds",
    "build_results",
    "cell_record",
    "settings_mismatch",
    "write_results",
]

CELL_FILE = "evaluate_cell.json"
RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"
# keys that do not change what a cell learns: a rerun may change them freely
NEUTRAL_KEYS = ("train.progress", "train.resume", "train.stop_after", "train.log_every", "train.prefetch")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def add_cell_seconds(cell: Cell, seconds: float) -> None:
    """Add one invocation's wall time to the cell's record (a resumed cell adds up its runs)."""
    path = cell.output_dir / CELL_FILE
    total = float(_read_json(path).get("seconds", 0.0)) + seconds
    write_json(path, {"task": cell.task.name, "seed": cell.seed, "model": cell.model.tag, "seconds": total})


def cell_record(cell: Cell) -> dict | None:
    """The cell's row of results.json, or None if the cell is not complete."""
    if not finetune_complete(cell.output_dir):
        return None
    results = _read_json(cell.output_dir / RESULTS_FILE)
    metrics = {k.removeprefix("eval/"): float(v) for k, v in results.items() if k.startswith("eval/")}
    summary = _read_json(cell.output_dir / "summary.json")
    seconds = _read_json(cell.output_dir / CELL_FILE).get("seconds", summary.get("wall_time_s"))
    return {
        "index": cell.index,
        "task": cell.task.name,
        "seed": cell.seed,
        "model": cell.model.tag,
        "metrics": metrics,
        "steps": summary.get("steps"),
        "seconds": seconds,
        "output_dir": str(cell.output_dir),
    }


def settings_mismatch(saved: dict, expected: dict) -> list[str]:
    """Keys (dotted) whose values differ between a cell's saved config.yaml and what it should be."""
    a, b = flatten(saved), flatten(expected)
    keys = sorted((set(a) | set(b)) - set(NEUTRAL_KEYS))
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def provenance() -> dict:
    """Command line, date, commit and machine: where the table came from (with results.json's config)."""
    return {
        "argv": list(sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
    }


def build_results(meta: dict, cells: list[Cell], records: list[dict], baselines: dict) -> dict:
    """results.json's content.  ``meta``: suite, models (tag -> description), tasks (Task list),
    seeds, overrides, config (the resolved evaluate config); ``records``: the complete cells' rows."""
    done = {r["index"] for r in records}
    missing = [
        {"index": c.index, "describe": c.describe(), "output_dir": str(c.output_dir)}
        for c in cells
        if c.index not in done
    ]
    tasks = meta["tasks"]
    return {
        "suite": meta["suite"],
        "models": meta["models"],
        "seeds": meta["seeds"],
        "tasks": {t.name: {"score_metrics": list(t.metrics), "origin": t.origin} for t in tasks},
        "finetune_overrides": meta["overrides"],
        "cells": records,
        "missing": missing,
        "summary": summarize(tasks, list(meta["models"]), records, baselines),
        "noise_rule": NOISE_RULE,
        "config": meta["config"],
        "provenance": provenance(),
    }


def write_results(results: dict, output_dir: Path) -> None:
    """results.json, results.md, results.png and tensorboard/ in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / RESULTS_JSON, results, end="\n")
    write_text(output_dir / RESULTS_MD, results_markdown(results))
    write_bar_chart(results, output_dir / RESULTS_PNG)
    write_tensorboard(results, output_dir / "tensorboard")
