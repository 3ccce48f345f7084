"""THE training loop: ``fit(accelerator, train_cfg, task, output_dir, hparams)``.

Every training stage (pretrain, finetune) builds a :class:`~pipeline.train.task.TrainTask` and
calls :func:`fit` (through :func:`pipeline.train.run_training_stage`).  Nothing here branches on
DDP / FSDP / DeepSpeed: Accelerate applies whatever the launch config says.

Loss normalisation.  The model returns a *summed* loss and the batch carries its number of loss
targets (masked tokens, labelled examples).  Before each optimizer step the target counts of all
micro-batches on all processes are summed in one all-reduce, and each micro-batch's loss is scaled
so that the gradient equals d(sum of losses)/d(theta) / (global target count) - exactly the mean
over the global batch, whatever the split into processes and micro-batches.
(Accelerate / DeepSpeed divide by grad_accum and data parallelism averages over processes; the
scale ``processes x grad_accum / global_targets`` undoes both.)

The same all-reduce carries the "stop requested" flag of SIGTERM/SIGUSR1, so every process agrees
to write a checkpoint and exit at the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.io import replace_dir
from pipeline.train.accel import announce_backend, check_prepared, clip_grad_norm
from pipeline.train.batches import micro_batch_stream
from pipeline.train.checkpoint import CheckpointManager, resume_from
from pipeline.train.config import TrainConfig
from pipeline.train.elastic import load_checkpoint
from pipeline.train.optim import build_optimizer, lr_schedule, set_lr
from pipeline.train.reductions import RunningSums, global_loss_scale
from pipeline.train.signals import StopSignal
from pipeline.train.state import TrainerState
from pipeline.train.task import COUNTERS, TrainTask
from pipeline.train.throughput import ThroughputMeter, compute_dtype, measure_peak_flops
from pipeline.train.tracking import RunLogger

__all__ = ["FitHooks", "fit"]


@dataclass
class FitHooks:
    """Seams for tools that run the real loop (benchmarks); the defaults are what every stage uses.

    ``optimizer(model, train_cfg)`` builds the optimizer; ``checkpoints(root, keep)`` the checkpoint
    manager; ``wrap_stream(stream)``, if set, wraps the iterator of micro-batches (called once per
    micro-batch, in order), e.g. to time each request for data."""

    optimizer: Callable[[torch.nn.Module, TrainConfig], torch.optim.Optimizer] = build_optimizer
    checkpoints: Callable[[Path, int], CheckpointManager] = CheckpointManager
    wrap_stream: Callable[[Iterator[dict]], Iterator[dict]] | None = None


def _to_device(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items() if k not in COUNTERS}


class _Trainer:
    """One fit() call: the prepared model and optimizer, the resumable state; methods are the loop's phases."""

    def __init__(self, accelerator, train: TrainConfig, task: TrainTask, out: Path, hparams, hooks: FitHooks):
        self.acc, self.cfg, self.task, self.out = accelerator, train, task, out
        model = task.model
        if train.compile:
            model.compile()  # in place: parameter names (and saved weights) stay free of `_orig_mod.`
        optimizer = hooks.optimizer(model, train)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # training mode from the first step: transformers' from_pretrained returns a model in eval
        # mode, which would fine-tune a pretrained encoder without its dropout until the first eval
        self.model.train()
        check_prepared(accelerator, train)
        announce_backend(accelerator, self.model)
        self.lr_at = lr_schedule(train, train.max_steps)
        self.ckpts = hooks.checkpoints(self.out / "checkpoints", train.keep_checkpoints)
        self.state = TrainerState(epoch_of=task.epoch_of)
        self._resume()
        self.logger = RunLogger(accelerator, out, hparams, train.max_steps, self.state.step, train.progress)
        if task.facts:
            self.logger.log(self.state.step, task.facts)
        peak = train.peak_tflops * 1e12 or measure_peak_flops(
            accelerator.device, compute_dtype(accelerator.mixed_precision)
        )
        self.meter = ThroughputMeter(task.flops_per_token, peak * accelerator.num_processes)
        self.sums = RunningSums(accelerator.device)
        self.first_bad = torch.tensor(-1, device=accelerator.device)
        self.last_saved = -1
        self.last_metrics: dict[str, float] = {}  # the latest evaluation's (with its step), for the summary

    def _resume(self) -> None:
        found = resume_from(
            self.acc,
            self.cfg.resume,
            self.ckpts,
            lambda p: load_checkpoint(self.acc, self.model, self.optimizer, p),
        )
        if found is None:
            return
        path, saved = found
        self.state.load_state_dict(saved)
        console.info(f"resumed from {path} at step {self.state.step}")

    def save(self) -> None:
        if self.last_saved == self.state.step:
            return
        self.ckpts.save(self.acc, self.state)
        self.last_saved = self.state.step

    def evaluate(self) -> dict[str, float]:
        if self.task.evaluate is None or self.last_metrics.get("step") == self.state.step:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model)
        self.model.train()
        self.last_metrics = {"step": self.state.step, **metrics}
        self.logger.log(self.state.step, metrics)
        if self.cfg.metric_for_best is not None:
            self._track_best(metrics, self.cfg.metric_for_best)
        return metrics

    def _track_best(self, metrics: dict[str, float], key: str) -> None:
        if key not in metrics:
            raise PipelineError(
                f"train.metric_for_best={key!r} is not an evaluation metric: {sorted(metrics)}"
            )
        if self.state.improves(metrics[key], self.cfg.greater_is_better):
            self.state.best = metrics[key]
            self.task.export(self.acc, self.model, self.out / "best")
            if self.task.on_new_best is not None:
                self.task.on_new_best(self.model, metrics, self.state.step)

    def train_step(self, micro_batches: list[dict], scale: torch.Tensor) -> None:
        set_lr(self.optimizer, self.lr_at(self.state.step))  # before backward: DeepSpeed steps inside it
        for mb in micro_batches:
            with self.acc.accumulate(self.model):
                out = self.model(**_to_device(mb, self.acc.device))
                self.acc.backward(out["loss_sum"] * scale)
                if self.acc.sync_gradients:
                    norm = clip_grad_norm(self.acc, self.model, self.cfg.max_grad_norm)
                    self.sums.add_step(norm)
                    if self._step_allowed(norm):
                        self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.sums.add(out, int(mb["num_targets"]))
            self.meter.add(int(mb["num_tokens"]) * self.acc.num_processes)
        self.state.step += 1

    def _step_allowed(self, norm: torch.Tensor) -> bool:
        """Non-finite gradients. fp16: the grad scaler skips the step and lowers the scale itself.
        'skip' needs to know now (one host sync per step); 'stop' records the first bad step on
        device and is checked at log and save steps, before anything could be saved."""
        if self.acc.mixed_precision == "fp16":
            return True
        bad = ~torch.isfinite(norm.to(self.acc.device))
        if self.cfg.on_nonfinite == "stop":
            step = torch.tensor(self.state.step + 1, device=self.acc.device)
            self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
            return True
        if bool(bad):
            self.state.nonfinite_steps += 1
            console.info(
                f"step {self.state.step + 1}: non-finite gradient, step skipped "
                f"({self.state.nonfinite_steps} so far)"
            )
            return False
        return True

    def check_finite(self) -> None:
        first_bad = int(self.first_bad)
        if first_bad >= 0:
            raise PipelineError(
                f"non-finite loss/gradient at step {first_bad} (train.on_nonfinite=stop); the last good "
                f"checkpoint is kept in {self.ckpts.root}. Lower train.lr or set train.on_nonfinite=skip"
            )

    def log_train(self) -> None:
        values = self.sums.reduce(self.acc)
        values.update({f"train/{k}": v for k, v in self.meter.read().items()})
        values["train/lr"] = self.lr_at(self.state.step - 1)
        values["train/epoch"] = self.state.data_epoch
        values["train/nonfinite_steps"] = self.state.nonfinite_steps
        self.logger.log(self.state.step, values)


def fit(
    accelerator,
    train: TrainConfig,
    task: TrainTask,
    output_dir: str | Path,
    hparams: Any = None,
    *,
    hooks: FitHooks | None = None,
) -> dict:
    """Train ``task`` for ``train.max_steps`` optimizer steps (resuming as ``train.resume`` says);
    return a run summary.  ``hparams`` (a config dataclass, default ``train``) is recorded as the
    run's TensorBoard hyperparameters.

    ``summary["completed"]`` is False when a stop signal ended the run early after checkpointing.
    """
    hooks = hooks or FitHooks()
    hparams = train if hparams is None else hparams
    trainer = _Trainer(accelerator, train, task, Path(output_dir), hparams, hooks)
    start_step = trainer.state.step
    stop = StopSignal()
    stream = micro_batch_stream(task.make_batch, start_step, train.grad_accum, train.prefetch)
    if hooks.wrap_stream is not None:
        stream = hooks.wrap_stream(stream)
    started = time.perf_counter()
    try:
        stopped = _train(trainer, stream, stop, start_step)
        _finish(trainer, stopped)
    finally:
        stream.close()
        stop.restore()
        trainer.logger.close()
    return _summary(trainer, start_step, time.perf_counter() - started, completed=not stopped)


def _train(trainer: _Trainer, stream: Iterator[dict], stop: StopSignal, start_step: int) -> bool:
    """Optimizer steps until ``max_steps``; True if a stop request or ``train.stop_after`` ended it."""
    cfg, state = trainer.cfg, trainer.state
    while state.step < cfg.max_steps:
        micro_batches = [next(stream) for _ in range(cfg.grad_accum)]
        scale, stop_flag = global_loss_scale(trainer.acc, micro_batches, stop, cfg.grad_accum)
        ran = state.step - start_step
        if (_periodic(state.step, cfg.log_every) and float(stop_flag) > 0) or ran == cfg.stop_after > 0:
            return True
        trainer.train_step(micro_batches, scale)
        _after_step(trainer, cfg)
    return False


def _finish(trainer: _Trainer, stopped: bool) -> None:
    """The last evaluation, checkpoint and export (or only the checkpoint, when stopped early)."""
    if stopped:
        console.info(f"stop signal received: checkpointing at step {trainer.state.step} and exiting")
    else:
        trainer.check_finite()
        trainer.evaluate()
    trainer.save()
    if not stopped:
        _export_final(trainer)


def _periodic(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _after_step(trainer: _Trainer, cfg: TrainConfig) -> None:
    step, last = trainer.state.step, trainer.state.step == cfg.max_steps
    if _periodic(step, cfg.log_every) or last:
        trainer.check_finite()
        trainer.log_train()
    if _periodic(step, cfg.eval_every) and not last:
        trainer.evaluate()
    if _periodic(step, cfg.save_every) and not last:
        trainer.check_finite()
        trainer.save()
    trainer.logger.advance()


def _export_final(trainer: _Trainer) -> None:
    final, best = trainer.out / "final", trainer.out / "best"
    if trainer.cfg.metric_for_best is not None and best.is_dir():
        trainer.acc.wait_for_everyone()
        if trainer.acc.is_main_process:
            replace_dir(best, final)
        trainer.acc.wait_for_everyone()
    else:
        trainer.task.export(trainer.acc, trainer.model, final)


def _summary(trainer: _Trainer, start_step: int, seconds: float, completed: bool) -> dict:
    tokens, state = trainer.meter.total_tokens, trainer.state
    tps = tokens / max(seconds, 1e-9)
    summary = {
        "completed": completed,
        "steps": state.step,
        "steps_this_run": state.step - start_step,
        "tokens_this_run": tokens,
        "wall_time_s": round(seconds, 2),
        "tokens_per_sec": round(tps, 1),
        "mfu": tps * trainer.meter.flops_per_token / trainer.meter.peak if trainer.meter.peak else 0.0,
        "best": state.best,
        "last_eval": trainer.last_metrics,  # {} when this run evaluated nothing
        "nonfinite_steps": state.nonfinite_steps,
        **trainer.task.facts,
    }
    console.info(
        f"run summary: {summary['steps']} steps ({summary['steps_this_run']} this run), {tokens:,} tokens, "
        f"{seconds:.1f} s, {tps:,.0f} tokens/s, MFU {summary['mfu']:.1%}"
    )
    return summary
