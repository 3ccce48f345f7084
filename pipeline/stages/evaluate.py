"""How good is a model downstream: fine-tune it on every task of a suite, for several seeds, next to
baselines, and write one table.

Run:
    pipeline evaluate --config configs/evaluate/glue_local.yaml model=runs/quickstart/pretrain/final compare=[none]
    pipeline evaluate --config configs/evaluate/glue_local.yaml model=DIR output_dir=DIR seeds=[0,1,2] \\
        tasks=[sst2,cola,configs/finetune/conll_ner.yaml] compare=[none] finetune.train.max_steps=100
    accelerate launch --config_file launch/accelerate/ddp.yaml -m pipeline evaluate --config ...  # each cell on N GPUs
    sbatch --array=0-23 launch/slurm/evaluate_array.sbatch --config ...     # one cell per task (cell_index=K)
    pipeline evaluate --config ... collect_only=true                          # then the tables

Every (model, task, seed) cell is a normal ``pipeline finetune`` run in
``<output_dir>/cells/<model>/<task>/seed<k>/``, run in this process through the finetune stage and
the one training loop: a complete cell is skipped, an interrupted one resumes from its checkpoint.
``compare=[none]`` adds the same architecture with random weights (read from ``model``'s
config.json, with its tokenizer).  Everything that can be checked is checked before the first cell
trains: the models, each task's data (read once, which also gives the majority baseline) and that
each task produces the metrics its score needs.  Outputs: results.json, results.md, results.png,
tensorboard/ and a summary printed at the end.  The work lives in ``pipeline/evaluate/``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import console
from pipeline.config import REQUIRED, ConfigError, flatten, from_dict, option, read_yaml, to_dict
from pipeline.errors import PipelineError
from pipeline.evaluate import (
    Cell,
    Model,
    add_cell_seconds,
    build_results,
    cell_record,
    cell_settings,
    enumerate_cells,
    majority_baseline,
    resolve_models,
    resolve_tasks,
    screen_summary,
    settings_mismatch,
    suite_tasks,
    write_results,
)
from pipeline.finetune import check_model_dir
from pipeline.stages import finetune
from pipeline.text import load_tokenizer
from pipeline.train import prepare_output_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


@dataclass
class Config:
    output_dir: str = option(
        REQUIRED, "results.json, results.md, results.png, tensorboard/ and cells/<model>/<task>/seed<k>/"
    )
    model: str = option(
        REQUIRED, "the model to evaluate: a pretrain run's final/ or a local HF encoder directory"
    )
    name: str = option("evaluate", "the suite's name, shown in the tables")
    seeds: list[int] = option([0, 1, 2], "fine-tuning seeds (data order and head initialisation) per task")
    tasks: list[str] = option(
        [],
        "suite task names and/or `pipeline finetune` config files (*.yaml); empty = every task of the suite",
    )
    compare: list[str] = option(
        [], "more models in the same table: directories, or none (model's architecture, random weights)"
    )
    finetune: dict = option(
        {},
        "keys of `pipeline finetune` for every cell, over the suite's per-task recipe, e.g. finetune.train.max_steps=100",
    )
    suite: dict = option({}, "task name -> {config, finetune, metrics}: see configs/evaluate/glue_local.yaml")
    collect_only: bool = option(
        False, "train nothing: build the tables from the cells that exist (after a Slurm array)"
    )
    cell_index: int | None = option(
        None, "run only cell K (0-based; models, then tasks, then seeds) and no tables: one Slurm array task"
    )
    keep_checkpoints: bool = option(
        False,
        "keep a finished cell's checkpoints/ (default: removed once it is complete; final/ and results stay)",
    )

    def validate(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: give one or more distinct seeds, got {self.seeds}")
        plan = self.plan()  # every task file and every cell's finetune keys are checked now
        if self.cell_index is not None and not 0 <= self.cell_index < len(plan.cells):
            raise ConfigError(
                f"cell_index={self.cell_index}: there are {len(plan.cells)} cells "
                f"(a Slurm array runs them as --array=0-{len(plan.cells) - 1})"
            )

    def plan(self) -> Plan:
        """Models, tasks, cells and each cell's resolved ``pipeline finetune`` config."""
        tasks = resolve_tasks(self.tasks, suite_tasks(self.suite))
        models = resolve_models(self.model, self.compare)
        cells = enumerate_cells(models, tasks, self.seeds, self.output_dir)
        configs = {}
        for cell in cells:
            settings = cell_settings(cell, self.finetune, models[0])
            try:
                configs[cell.index] = from_dict(finetune.Config, settings, prefix="finetune.")
            except ConfigError as e:
                raise ConfigError(f"task {cell.task.name!r} ({cell.task.origin}): {e}") from None
        return Plan(models, tasks, cells, configs)


@dataclass
class Plan:
    models: list[Model]
    tasks: list
    cells: list[Cell]
    configs: dict[int, finetune.Config]

    def first_config(self, task_name: str) -> finetune.Config:
        return self.configs[next(c.index for c in self.cells if c.task.name == task_name)]


def _check_model(path: str, key: str, tokenizer_override: str | None) -> None:
    check_model_dir(path, key)
    if tokenizer_override:
        return
    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise PipelineError(
            f"{key}={path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it with the model "
            "(pipeline pretrain's final/ has one) or set finetune.model.tokenizer=DIR"
        )
    load_tokenizer(path, key=key)


def _baselines(plan: Plan, task_names: set[str]) -> dict:
    """Read every task's data once: the majority baseline, and the metrics the task produces."""
    baselines = {}
    for task in [t for t in plan.tasks if t.name in task_names]:
        cfg = plan.first_config(task.name)
        try:
            baseline = majority_baseline(cfg.task.type, cfg.data)
        except PipelineError as e:
            raise PipelineError(f"task {task.name!r} ({task.origin}): {e}") from None
        unknown = [m for m in task.metrics if m not in baseline.produced]
        if unknown:
            raise PipelineError(
                f"task {task.name!r}: metric(s) {unknown} are not produced by this {cfg.task.type} task; "
                f"it reports {', '.join(sorted(baseline.produced))}"
            )
        baselines[task.name] = baseline
    return baselines


def _check_settings(cell: Cell, cfg: finetune.Config) -> None:
    """A cell directory trained with other settings must not slip into the table as if it were this one."""
    saved = cell.output_dir / "config.yaml"
    if not saved.is_file():
        return
    different = settings_mismatch(read_yaml(saved), to_dict(cfg))
    if different:
        raise PipelineError(
            f"{cell.describe()}: {cell.output_dir} was trained with other settings ({'; '.join(different[:3])}); "
            "use another output_dir or delete that cell directory"
        )


def _preflight(cfg: Config, plan: Plan, cells: list[Cell]) -> dict:
    """Every check that needs no training, before the first cell trains; returns the baselines."""
    tokenizer = (cfg.finetune.get("model") or {}).get("tokenizer")
    for model in plan.models:
        if not model.scratch and any(c.model == model for c in cells):
            _check_model(model.path, "model" if model == plan.models[0] else "compare", tokenizer)
    if any(c.model.scratch for c in cells) and plan.models[0] not in {c.model for c in cells}:
        _check_model(plan.models[0].path, "model", tokenizer)  # none's architecture and tokenizer
    for cell in cells:
        _check_settings(cell, plan.configs[cell.index])
    return _baselines(plan, {c.task.name for c in cells})


def _run_cell(cell: Cell, cfg: finetune.Config, keep_checkpoints: bool) -> int:
    if finetune.is_complete(cfg):
        console.info(f"[evaluate] {cell.describe()}: complete in {cell.output_dir}, skipped")
        return 0
    console.info(f"[evaluate] {cell.describe()} -> {cell.output_dir}")
    start = time.perf_counter()
    code = finetune.run(cfg)
    if console.is_main_process():
        add_cell_seconds(cell, time.perf_counter() - start)
        if code == 0 and not keep_checkpoints:
            shutil.rmtree(cell.output_dir / "checkpoints", ignore_errors=True)
    return code


def _describe_models(plan: Plan) -> dict[str, str]:
    first = plan.models[0]
    return {
        m.tag: f"the architecture of `{first.tag}` with random weights"
        if m.scratch
        else f"{m.path}{' (evaluated)' if m == first else ''}"
        for m in plan.models
    }


def collect(cfg: Config, plan: Plan, baselines: dict | None = None) -> int:
    """Build results.json / .md / .png / tensorboard from the complete cells; say which are missing."""
    baselines = baselines or _baselines(plan, {t.name for t in plan.tasks})
    for cell in plan.cells:
        _check_settings(cell, plan.configs[cell.index])
    records = [r for r in map(cell_record, plan.cells) if r is not None]
    meta = {
        "suite": cfg.name,
        "models": _describe_models(plan),
        "tasks": plan.tasks,
        "seeds": list(cfg.seeds),
        "overrides": ", ".join(f"`{k}={v}`" for k, v in flatten(cfg.finetune).items()),
        "config": to_dict(cfg),
    }
    results = build_results(meta, plan.cells, records, baselines)
    write_results(results, Path(cfg.output_dir))
    console.info(screen_summary(results, cfg.output_dir))
    if results["missing"]:
        console.warn(
            f"{len(results['missing'])} of {len(plan.cells)} cells are missing from the table (results.md lists "
            "them): run them (rerun without collect_only, or the Slurm array), then collect again"
        )
    return 0


def run(cfg: Config) -> int:
    plan = cfg.plan()
    cells = plan.cells if cfg.cell_index is None else [plan.cells[cfg.cell_index]]
    if cfg.cell_index is None and console.is_main_process():
        prepare_output_dir(cfg.output_dir, cfg)  # not per array task: they would race on config.yaml
    baselines = None
    if not cfg.collect_only:
        baselines = _preflight(cfg, plan, cells)
        for cell in cells:
            code = _run_cell(cell, plan.configs[cell.index], cfg.keep_checkpoints)
            if code:
                console.info(
                    f"[evaluate] {cell.describe()} exited with {code}; rerun the same command to resume"
                )
                return code
        if cfg.cell_index is not None:
            return 0
    if console.is_main_process():
        return collect(cfg, plan, baselines if cfg.cell_index is None else None)
    return 0


def is_complete(cfg: Config) -> bool:
    """Every cell is complete and the tables are written."""
    plan = cfg.plan()
    return (Path(cfg.output_dir) / "results.json").is_file() and all(
        finetune.is_complete(plan.configs[c.index]) for c in plan.cells
    )


__all__ = ["Config", "Plan", "collect", "is_complete", "run"]
