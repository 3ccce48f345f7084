"""Downstream evaluation: many tasks x seeds x models fine-tuned through the finetune stage, then one table.

    tasks = resolve_tasks(cfg.tasks, suite_tasks(cfg.suite))
    cells = enumerate_cells(resolve_models(cfg.model, cfg.compare), tasks, cfg.seeds, cfg.output_dir)
    ...each cell is a `pipeline finetune` run (the evaluate stage runs them)...
    results = build_results(meta, cells, [cell_record(c) for c in cells if ...], baselines)
    write_results(results, output_dir)

Modules: ``suite`` (the ``suite`` section, tasks, models, cells), ``baseline`` (majority baseline,
metrics a task produces), ``stats`` (mean +- std, task scores, paired differences and the noise
rule), ``results`` (cell records, results.json), ``report`` (results.md, the printed summary),
``plots`` (results.png, TensorBoard).  The stage itself is ``pipeline/stages/evaluate.py``.
"""

from pipeline.evaluate.baseline import Baseline, majority_baseline
from pipeline.evaluate.plots import write_bar_chart, write_tensorboard
from pipeline.evaluate.report import results_markdown, screen_summary
from pipeline.evaluate.results import (
    CELL_FILE,
    add_cell_seconds,
    build_results,
    cell_record,
    settings_mismatch,
    write_results,
)
from pipeline.evaluate.stats import ALPHA, NOISE_RULE, mean_std, paired_difference, summarize, task_score
from pipeline.evaluate.suite import (
    AVERAGE,
    NONE,
    Cell,
    Model,
    SuiteTask,
    Task,
    cell_settings,
    enumerate_cells,
    resolve_models,
    resolve_tasks,
    suite_tasks,
)

__all__ = [
    "ALPHA",
    "AVERAGE",
    "CELL_FILE",
    "NOISE_RULE",
    "NONE",
    "Baseline",
    "Cell",
    "Model",
    "SuiteTask",
    "Task",
    "add_cell_seconds",
    "build_results",
    "cell_record",
    "cell_settings",
    "enumerate_cells",
    "majority_baseline",
    "mean_std",
    "paired_difference",
    "resolve_models",
    "resolve_tasks",
    "results_markdown",
    "screen_summary",
    "settings_mismatch",
    "suite_tasks",
    "summarize",
    "task_score",
    "write_bar_chart",
    "write_results",
    "write_tensorboard",
]
