"""Training: THE loop (``fit``) every training stage shares, and what it needs.

    accelerator = make_accelerator(cfg.train, output_dir)              # the launch config decides the rest
    summary = fit(accelerator, train_cfg, task, output_dir, hparams)   # task: a TrainTask

Stages normally call :func:`run_training_stage`, which adds the output directory checks,
``config.yaml`` and ``summary.json``.  Modules: ``config`` (the ``train`` section), ``task``
(:class:`TrainTask`, what a stage hands the loop), ``state`` (:class:`TrainerState`, what a
checkpoint resumes), ``loop`` (``fit``), ``runner``, ``accel`` (Accelerator + CPU shim), ``batches``
(which samples each process trains on), ``checkpoint`` (atomic checkpoints, resume, export),
``elastic`` (loading a checkpoint into another process count or sharding),
``optim`` (AdamW, LR schedules), ``reductions`` (cross-process sums), ``signals`` (stop signals),
``throughput`` (tokens/s, MFU), ``tracking`` (TensorBoard + metrics.jsonl).
"""

from pipeline.train.accel import make_accelerator
from pipeline.train.batches import GlobalBatchPlan, eval_batches, micro_batch_stream
from pipeline.train.checkpoint import CheckpointManager, check_checkpoint, export_model
from pipeline.train.config import TrainConfig, resolve_max_steps
from pipeline.train.elastic import load_checkpoint
from pipeline.train.loop import FitHooks, fit
from pipeline.train.optim import build_optimizer, lr_schedule, param_groups
from pipeline.train.runner import EXIT_STOPPED, prepare_output_dir, run_completed, run_training_stage
from pipeline.train.state import TrainerState
from pipeline.train.task import COUNTERS, IGNORE_INDEX, TrainTask
from pipeline.train.throughput import measure_peak_flops

__all__ = [
    "COUNTERS",
    "EXIT_STOPPED",
    "IGNORE_INDEX",
    "CheckpointManager",
    "FitHooks",
    "GlobalBatchPlan",
    "TrainConfig",
    "TrainTask",
    "TrainerState",
    "build_optimizer",
    "check_checkpoint",
    "eval_batches",
    "export_model",
    "fit",
    "load_checkpoint",
    "lr_schedule",
    "make_accelerator",
    "measure_peak_flops",
    "micro_batch_stream",
    "param_groups",
    "prepare_output_dir",
    "resolve_max_steps",
    "run_completed",
    "run_training_stage",
]
