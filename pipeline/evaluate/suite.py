"""What ``pipeline evaluate`` runs: the tasks of a suite, the models, and the cells they make.

Called by the evaluate stage (``pipeline evaluate --config configs/evaluate/glue_local.yaml``)::

    tasks = resolve_tasks(cfg.tasks, suite_tasks(cfg.suite))       # names of the suite or finetune config files
    models = resolve_models(cfg.model, cfg.compare)                # the model first, then the comparisons
    cells = enumerate_cells(models, tasks, cfg.seeds, cfg.output_dir)

A cell is one fine-tuning run, (model, task, seed), in ``<output_dir>/cells/<model>/<task>/seed<k>/``;
``cells[k]`` is what ``cell_index=k`` runs, so the enumeration (models, then tasks, then seeds, in
the order given) is part of the contract with the Slurm array script.  :func:`cell_settings` stacks
a cell's ``pipeline finetune`` keys: the task's config file < the suite's per-task recipe < the
user's ``finetune.*`` overrides < what evaluate wires (output_dir, model.init_from, train.seed).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ConfigError, from_dict, merge, option, read_yaml
from pipeline.finetune import DEFAULT_METRIC

__all__ = [
    "AVERAGE",
    "NONE",
    "Cell",
    "Model",
    "SuiteTask",
    "Task",
    "cell_settings",
    "enumerate_cells",
    "resolve_models",
    "resolve_tasks",
    "suite_tasks",
]

NONE = "none"  # the comparison model: the evaluated model's architecture with random weights
AVERAGE = "average"  # the summary row of the suite average (not a task name)
CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class SuiteTask:
    """One entry of the ``suite`` section: a task and its fine-tuning recipe."""

    config: str | None = option(
        None, "`pipeline finetune` config file the task starts from (data files and layout, task type)"
    )
    finetune: dict = option({}, "keys of `pipeline finetune` over that file: the task's recipe")
    metrics: list[str] = option(
        [],
        "the task's score: the mean of these validation metrics (GLUE: MRPC f1 and accuracy); empty = train.metric_for_best",
    )


@dataclass(frozen=True)
class Task:
    name: str
    settings: dict = field(hash=False)  # `pipeline finetune` keys: config file < suite recipe
    metrics: tuple[str, ...]  # the score is their mean (names without "eval/")
    origin: str  # "suite" or the config file it came from


@dataclass(frozen=True)
class Model:
    tag: str  # name in tables and cell directories
    path: str  # a model directory, or "none"

    @property
    def scratch(self) -> bool:
        return self.path == NONE


@dataclass(frozen=True)
class Cell:
    index: int
    model: Model
    task: Task
    seed: int
    output_dir: Path

    def describe(self) -> str:
        return f"cell {self.index}: {self.model.tag} / {self.task.name} / seed {self.seed}"


def suite_tasks(suite: dict) -> dict[str, SuiteTask]:
    """The ``suite`` section checked entry by entry (errors name ``suite.<task>.<key>``)."""
    out = {}
    for name, entry in suite.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"suite.{name}: expected a mapping (config, finetune, metrics), got {entry!r}")
        out[str(name)] = from_dict(SuiteTask, entry, prefix=f"suite.{name}.")
    return out


def _default_metrics(settings: dict) -> tuple[str, ...]:
    train, task = settings.get("train") or {}, settings.get("task") or {}
    metric = train.get("metric_for_best") or DEFAULT_METRIC.get(task.get("type"), "eval/accuracy")
    return (str(metric).removeprefix("eval/"),)


def _suite_task(name: str, entry: SuiteTask) -> Task:
    try:
        base = read_yaml(entry.config) if entry.config else {}
    except ConfigError as e:
        where = (
            f" (relative to the working directory {Path.cwd()})"
            if not Path(str(entry.config)).is_absolute()
            else ""
        )
        raise ConfigError(f"suite.{name}.config: {e}{where}") from None
    settings = merge(base, entry.finetune)
    metrics = tuple(m.removeprefix("eval/") for m in entry.metrics) or _default_metrics(settings)
    return Task(name, settings, metrics, "suite")


def _file_task(path: str) -> Task:
    settings = read_yaml(path)  # errors name the file
    name = re.sub(r"[^\w.-]", "_", Path(path).stem)
    return Task(name, settings, _default_metrics(settings), path)


def resolve_tasks(names: list[str], suite: dict[str, SuiteTask]) -> list[Task]:
    """Suite task names and finetune config files -> Tasks (empty ``names`` = the whole suite)."""
    tasks = []
    for name in names or list(suite):
        if name in suite:
            tasks.append(_suite_task(name, suite[name]))
        elif name.endswith(CONFIG_SUFFIXES) or Path(name).is_file():
            if not Path(name).is_file():
                raise ConfigError(f"tasks: finetune config file not found: {name}")
            tasks.append(_file_task(name))
        else:
            hint = difflib.get_close_matches(name, list(suite), n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"tasks: unknown task {name!r}: the suite has {', '.join(suite) or 'no tasks'} "
                f"(or give a finetune config file, *.yaml).{extra}"
            )
    if any(t.name == AVERAGE for t in tasks):
        raise ConfigError(f"tasks: {AVERAGE!r} is the name of the average row; rename that task")
    seen = [t.name for t in tasks]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ConfigError(f"tasks: the task name(s) {duplicates} appear twice (a file's name is its stem)")
    return tasks


def _tag(path: str) -> str:
    if path == NONE:
        return NONE
    parts = [p for p in Path(path).resolve().parts if p not in ("/", "")][-2:]
    return re.sub(r"[^\w.-]", "_", "-".join(parts)) or "model"


def resolve_models(model: str, compare: list[str]) -> list[Model]:
    """The evaluated model first, then each comparison; tags are unique (a suffix where two clash)."""
    if model == NONE:
        raise ConfigError(
            "model: give a model directory; none is a comparison (compare=[none]) that takes model's architecture"
        )
    paths = [model, *compare]
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise ConfigError(f"compare: {repeated} given twice (or equal to model)")
    models, used = [], set()
    for path in paths:
        tag, k = _tag(path), 2
        while tag in used:
            tag, k = f"{_tag(path)}-{k}", k + 1
        used.add(tag)
        models.append(Model(tag, path))
    return models


def enumerate_cells(models: list[Model], tasks: list[Task], seeds: list[int], root: str | Path) -> list[Cell]:
    """Every (model, task, seed), models outermost and seeds innermost: ``cell_index`` k is ``cells[k]``."""
    cells = []
    for model in models:
        for task in tasks:
            for seed in seeds:
                out = Path(root) / "cells" / model.tag / task.name / f"seed{seed}"
                cells.append(Cell(len(cells), model, task, seed, out))
    return cells


def cell_settings(cell: Cell, overrides: dict, reference: Model) -> dict:
    """The cell's ``pipeline finetune`` keys: task settings < ``overrides`` < the wired keys.

    ``none`` takes its architecture and tokenizer from ``reference`` (the evaluated model)."""
    wired: dict = {"output_dir": str(cell.output_dir), "train": {"seed": cell.seed}}
    if cell.model.scratch:
        wired["model"] = {"init_from": NONE, "architecture_from": reference.path}
    else:
        wired["model"] = {"init_from": cell.model.path, "architecture_from": None}
    return merge(cell.task.settings, overrides, wired)
