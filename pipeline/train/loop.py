"""THE training loop: ``fit(accelerator, train_cfg, task, output_dir, config)``.

Every training stage (pretrain, finetune) builds a :class:`TrainTask` and calls :func:`fit`.
Nothing here branches on DDP / FSDP / DeepSpeed: Accelerate applies whatever the launch config says.

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

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.io import replace_dir
from pipeline.train.accel import check_prepared, clip_grad_norm
from pipeline.train.batches import micro_batch_stream
from pipeline.train.checkpoint import CheckpointManager, load_first_loadable, resume_candidates
from pipeline.train.config import TrainConfig
from pipeline.train.optim import build_optimizer, lr_schedule, set_lr
from pipeline.train.reductions import RunningSums, global_loss_scale
from pipeline.train.signals import StopSignal
from pipeline.train.throughput import ThroughputMeter, compute_dtype, measure_peak_flops
from pipeline.train.tracking import RunLogger

COUNTERS = ("num_targets", "num_tokens")  # batch entries that are bookkeeping, not model inputs


@dataclass
class TrainTask:
    """What a stage hands to :func:`fit`."""

    model: (
        torch.nn.Module
    )  # forward(**inputs) -> {"loss_sum": 0-d tensor, optional other sums e.g. "correct"}
    make_batch: Callable[
        [int, int], dict
    ]  # (step, micro) -> this process's micro-batch (CPU tensors + COUNTERS)
    export: Callable[[object, torch.nn.Module, Path], None]  # (accelerator, prepared model, dir); collective
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None  # called on every process
    flops_per_token: float = 0.0
    on_new_best: Callable[[torch.nn.Module, dict[str, float], int], None] | None = (
        None  # (model, metrics, step)
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items() if k not in COUNTERS}


def _is_better(value: float, best: float | None, greater: bool) -> bool:
    return best is None or (value > best if greater else value < best)


class _Trainer:
    """State of one fit() call; methods are the loop's phases."""

    def __init__(self, accelerator, cfg: TrainConfig, task: TrainTask, output_dir: Path, config):
        self.acc, self.cfg, self.task, self.out = accelerator, cfg, task, Path(output_dir)
        model = task.model
        if cfg.compile:
            model.compile()  # in place: parameter names (and saved weights) stay free of `_orig_mod.`
        optimizer = build_optimizer(model, cfg)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        check_prepared(accelerator, cfg)
        self.lr_at = lr_schedule(cfg, cfg.max_steps)
        self.ckpts = CheckpointManager(self.out / "checkpoints", cfg.keep_checkpoints)
        self.step, self.best, self.nonfinite = 0, None, 0
        self._resume()
        self.logger = RunLogger(accelerator, self.out, config, cfg.max_steps, self.step, cfg.progress)
        peak = cfg.peak_tflops * 1e12 or measure_peak_flops(
            accelerator.device, compute_dtype(accelerator.mixed_precision)
        )
        self.meter = ThroughputMeter(task.flops_per_token, peak * accelerator.num_processes)
        self.sums = RunningSums(accelerator.device)
        self.first_bad = torch.tensor(-1, device=accelerator.device)
        self.last_saved = self.last_eval = -1

    def _resume(self) -> None:
        found = load_first_loadable(self.acc, resume_candidates(self.cfg.resume, self.ckpts))
        if found is None:
            if self.cfg.resume not in ("auto", "never"):
                raise PipelineError(f"train.resume={self.cfg.resume}: the checkpoint could not be loaded")
            return
        path, state = found
        self.step, self.best = int(state["step"]), state.get("best")
        self.nonfinite = int(state.get("nonfinite_steps", 0))
        console.info(f"resumed from {path} at step {self.step}")

    def save(self) -> None:
        if self.last_saved == self.step:
            return
        extra = {"best": self.best, "nonfinite_steps": self.nonfinite}
        self.ckpts.save(self.acc, self.step, extra)
        self.last_saved = self.step

    def evaluate(self) -> dict[str, float]:
        if self.task.evaluate is None or self.last_eval == self.step:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model)
        self.model.train()
        self.last_eval = self.step
        self.logger.log(self.step, metrics)
        key = self.cfg.metric_for_best
        if key is not None:
            if key not in metrics:
                raise PipelineError(
                    f"train.metric_for_best={key!r} is not an evaluation metric: {sorted(metrics)}"
                )
            if _is_better(metrics[key], self.best, self.cfg.greater_is_better):
                self.best = metrics[key]
                self.task.export(self.acc, self.model, self.out / "best")
                if self.task.on_new_best is not None:
                    self.task.on_new_best(self.model, metrics, self.step)
        return metrics

    def train_step(self, micro_batches: list[dict], scale: torch.Tensor) -> None:
        set_lr(self.optimizer, self.lr_at(self.step))  # before backward: DeepSpeed steps inside it
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
        self.step += 1

    def _step_allowed(self, norm: torch.Tensor) -> bool:
        """Non-finite gradients. fp16: the grad scaler skips the step and lowers the scale itself.
        'skip' needs to know now (one host sync per step); 'stop' records the first bad step on
        device and is checked at log and save steps, before anything could be saved."""
        if self.acc.mixed_precision == "fp16":
            return True
        bad = ~torch.isfinite(norm.to(self.acc.device))
        if self.cfg.on_nonfinite == "stop":
            step = torch.tensor(self.step + 1, device=self.acc.device)
            self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
            return True
        if bool(bad):
            self.nonfinite += 1
            console.info(f"step {self.step + 1}: non-finite gradient, step skipped ({self.nonfinite} so far)")
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
        values["train/lr"] = self.lr_at(self.step - 1)
        values["train/epoch"] = self.epoch_of(self.step)
        values["train/nonfinite_steps"] = self.nonfinite
        self.logger.log(self.step, values)


def resolve_max_steps(cfg: TrainConfig, num_samples: int, num_processes: int) -> TrainConfig:
    """``train.max_steps``, or ``train.epochs`` converted to optimizer steps for this global batch."""
    if cfg.max_steps > 0:
        return cfg
    global_batch = cfg.batch_size * cfg.grad_accum * num_processes
    return dataclasses.replace(cfg, max_steps=max(1, math.ceil(cfg.epochs * num_samples / global_batch)))


def fit(
    accelerator, cfg: TrainConfig, task: TrainTask, output_dir: str | Path, config, epoch_of=None
) -> dict:
    """Train ``task`` for ``cfg.max_steps`` optimizer steps (resuming if asked); return a run summary.

    ``summary["completed"]`` is False when a stop signal ended the run early after checkpointing.
    """
    trainer = _Trainer(accelerator, cfg, task, Path(output_dir), config)
    trainer.epoch_of = epoch_of or (lambda step: 0.0)
    stop = StopSignal()
    stream = micro_batch_stream(task.make_batch, trainer.step, cfg.grad_accum, cfg.prefetch)
    started, start_step, stopped = time.perf_counter(), trainer.step, False
    try:
        while trainer.step < cfg.max_steps:
            micro_batches = [next(stream) for _ in range(cfg.grad_accum)]
            scale, stop_flag = global_loss_scale(accelerator, micro_batches, stop, cfg.grad_accum)
            ran = trainer.step - start_step
            if (_periodic(trainer.step, cfg.log_every) and float(stop_flag) > 0) or ran == cfg.stop_after > 0:
                stopped = True
                break
            trainer.train_step(micro_batches, scale)
            _after_step(trainer, cfg)
        if stopped:
            console.info(f"stop signal received: checkpointing at step {trainer.step} and exiting")
        else:
            trainer.check_finite()
            trainer.evaluate()
        trainer.save()
        if not stopped:
            _export_final(trainer)
    finally:
        stream.close()
        stop.restore()
        trainer.logger.close()
    return _summary(trainer, start_step, time.perf_counter() - started, completed=not stopped)


def _periodic(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _after_step(trainer: _Trainer, cfg: TrainConfig) -> None:
    step, last = trainer.step, trainer.step == cfg.max_steps
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
    tokens = trainer.meter.total_tokens
    tps = tokens / max(seconds, 1e-9)
    summary = {
        "completed": completed,
        "steps": trainer.step,
        "steps_this_run": trainer.step - start_step,
        "tokens_this_run": tokens,
        "wall_time_s": round(seconds, 2),
        "tokens_per_sec": round(tps, 1),
        "mfu": tps * trainer.meter.flops_per_token / trainer.meter.peak if trainer.meter.peak else 0.0,
        "best": trainer.best,
        "nonfinite_steps": trainer.nonfinite,
    }
    console.info(
        f"run summary: {summary['steps']} steps ({summary['steps_this_run']} this run), {tokens:,} tokens, "
        f"{seconds:.1f} s, {tps:,.0f} tokens/s, MFU {summary['mfu']:.1%}"
    )
    return summary
