"""Fine-tune a pretrained encoder: sequence classification / regression (single or pair) and NER.

Run:
    pipeline finetune --config configs/finetune/sst2.yaml model.init_from=runs/pretrain/final
    accelerate launch --config_file launch/accelerate/ddp.yaml -m pipeline finetune --config configs/finetune/mrpc.yaml

Trains on the same loop as pretraining (``pipeline.train.fit``) with dynamic padding; evaluates on
``data.validation`` every ``train.eval_every`` steps; exports the best model by
``train.metric_for_best`` to ``<output_dir>/final/`` and writes ``eval_results.json`` (its metrics)
and ``predictions.tsv`` (``data.test`` predicted by that model).  The work lives in
``pipeline/finetune/`` (:func:`pipeline.finetune.build_finetune_task`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline import console
from pipeline.config import REQUIRED, option, section
from pipeline.finetune import (
    RESULTS_FILE,
    FinetuneDataConfig,
    FinetuneModelConfig,
    TaskConfig,
    build_finetune_task,
    finetune_complete,
)
from pipeline.train import TrainConfig, TrainTask, run_training_stage


@dataclass
class Config:
    output_dir: str = option(
        REQUIRED, "run directory: final/, eval_results.json, predictions.tsv, checkpoints/, tensorboard/"
    )
    task: TaskConfig = section(TaskConfig, "what to learn")
    data: FinetuneDataConfig = section(FinetuneDataConfig, "labelled files")
    model: FinetuneModelConfig = section(FinetuneModelConfig, "starting point")
    train: TrainConfig = section(TrainConfig, "optimisation, evaluation, checkpointing")


def build_task(cfg: Config, accelerator, output_dir: Path) -> tuple[TrainTask, TrainConfig]:
    """The loop's task and the ``train`` section resolved for it (steps from epochs, best metric)."""
    return build_finetune_task(cfg.task.type, cfg.data, cfg.model, cfg.train, accelerator, output_dir)


def run(cfg: Config) -> int:
    return run_training_stage(
        cfg, build_task, on_complete=_print_results, matmul_dims=cfg.model.matmul_dims()
    )


def is_complete(cfg: Config) -> bool:
    """A finished run: its last invocation completed and the best model's metrics are written."""
    return finetune_complete(cfg.output_dir)


def _print_results(output_dir: Path) -> None:
    results = json.loads((output_dir / RESULTS_FILE).read_text())
    shown = {k: round(v, 4) for k, v in results.items() if isinstance(v, float) and k.count("/") == 1}
    console.info(f"best validation metrics: {shown}")
