"""The shared loop on a toy regression task (single process, CPU, fp32), for the loop and fault tests.

``run(tmp, **train)`` trains :class:`ToyModel` on ``DATA_X`` / ``DATA_Y`` with the real ``fit`` and
returns ``(summary, metrics.jsonl records, final weights)``; tests may replace ``DATA_X`` (it is
read at each run) to inject faults.  ``reset_accelerate()`` clears Accelerate's process-wide state
between runs in one process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from accelerate.state import AcceleratorState, GradientState, PartialState

from pipeline.config import from_dict
from pipeline.train import GlobalBatchPlan, TrainConfig, TrainTask, fit, make_accelerator


class ToyModel(torch.nn.Module):
    """y = MLP(x) with dropout (exercises RNG restore); returns the squared error summed over the
    loss targets (a sample counts ``weight`` times)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def forward(self, x, y, weight):
        err = (self.net(x).squeeze(-1) - y) ** 2
        return {"loss_sum": (err * weight).sum()}


DATA_X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
DATA_Y = (DATA_X @ np.arange(8, dtype=np.float32) / 8).astype(np.float32)
# loss targets per sample (1-4, like masked tokens per sequence): micro-batches of the same size
# carry different target counts, so normalising by anything but the global count shows
DATA_TARGETS = np.random.default_rng(1).integers(1, 5, size=64).astype(np.float32)


def reset_accelerate():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()


def toy_task(cfg: TrainConfig, accelerator) -> TrainTask:
    torch.manual_seed(cfg.seed)
    model = ToyModel()
    plan = GlobalBatchPlan(
        len(DATA_X),
        cfg.batch_size,
        cfg.grad_accum,
        accelerator.num_processes,
        accelerator.process_index,
        cfg.seed,
    )

    def make_batch(step, micro):
        idx = plan.samples(plan.positions(step, micro))
        return {
            "x": torch.from_numpy(DATA_X[idx]),
            "y": torch.from_numpy(DATA_Y[idx]),
            "weight": torch.from_numpy(DATA_TARGETS[idx]),
            "num_targets": int(DATA_TARGETS[idx].sum()),
            "num_tokens": len(idx),
        }

    def evaluate(m):
        out = m(torch.from_numpy(DATA_X), torch.from_numpy(DATA_Y), torch.from_numpy(DATA_TARGETS))
        return {"eval/loss": out["loss_sum"].item() / float(DATA_TARGETS.sum())}

    def export(acc, m, path):
        export_model_plain(acc, m, path)

    return TrainTask(
        model=model, make_batch=make_batch, export=export, evaluate=evaluate, flops_per_token=100.0
    )


def export_model_plain(acc, model, path: Path):
    acc.wait_for_everyone()
    if acc.is_main_process:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(acc.unwrap_model(model).state_dict(), path / "weights.pt")


def run(tmp: Path, **train) -> tuple[dict, list[dict], dict | None]:
    reset_accelerate()
    base = dict(
        max_steps=8,
        batch_size=4,
        lr=1e-2,
        eval_every=4,
        save_every=4,
        log_every=1,
        peak_tflops=1.0,
        progress=False,
        prefetch=2,
        warmup_steps=2,
    )
    cfg = from_dict(TrainConfig, {**base, **train})
    acc = make_accelerator(cfg, tmp)
    summary = fit(acc, cfg, toy_task(cfg, acc), tmp, cfg)
    lines = [json.loads(line) for line in (tmp / "metrics.jsonl").read_text().splitlines()]
    final = tmp / "final" / "weights.pt"
    weights = torch.load(final, weights_only=True) if final.exists() else None
    return summary, lines, weights


def train_losses(lines):
    return {r["step"]: r["train/loss"] for r in lines if "train/loss" in r}
