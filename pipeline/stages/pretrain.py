"""Masked-language-model pretraining from scratch on a shard set (BERT or ModernBERT).

Run:
    pipeline pretrain --config configs/pretrain/tiny_cpu.yaml
    accelerate launch --config_file launch/accelerate/ddp.yaml -m pipeline pretrain --config configs/pretrain/bert_base.yaml

Reads ``data.shards`` (the output of ``pipeline shard``, which bundles its tokenizer), builds the
model from ``model.*``, masks on the fly (``mlm.*``), trains with the shared loop (``train.*``) and
exports ``<output_dir>/final/`` for ``AutoModelForMaskedLM`` / ``pipeline("fill-mask")``.  The work
lives in ``pipeline/mlm/`` (:func:`pipeline.mlm.build_mlm_task`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import REQUIRED, option, section
from pipeline.mlm import MaskingConfig, MlmDataConfig, ModelConfig, build_mlm_task
from pipeline.train import TrainConfig, TrainTask, run_completed, run_training_stage


@dataclass
class Config:
    output_dir: str = option(
        REQUIRED, "run directory: config.yaml, checkpoints/, final/, tensorboard/, metrics.jsonl"
    )
    data: MlmDataConfig = section(MlmDataConfig, "input shards")
    model: ModelConfig = section(ModelConfig, "architecture and size")
    mlm: MaskingConfig = section(MaskingConfig, "dynamic masking")
    train: TrainConfig = section(TrainConfig, "optimisation, evaluation, checkpointing")


def build_task(cfg: Config, accelerator, output_dir: Path | None = None) -> tuple[TrainTask, TrainConfig]:
    """The loop's task and the ``train`` section resolved for it (steps from epochs)."""
    return build_mlm_task(cfg.data, cfg.model, cfg.mlm, cfg.train, accelerator)


def run(cfg: Config) -> int:
    return run_training_stage(cfg, build_task, matmul_dims=cfg.model.matmul_dims())


def is_complete(cfg: Config) -> bool:
    """A finished run: its last invocation completed and ``final/`` holds the exported model."""
    return run_completed(cfg.output_dir) and (Path(cfg.output_dir) / "final" / "config.json").is_file()
