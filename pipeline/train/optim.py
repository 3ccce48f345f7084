"""AdamW with the usual no-decay groups, and learning-rate schedules as pure functions of the step.

The schedule is a function ``lr_at(step)`` that the loop writes into the optimizer's param groups
before every optimizer step.  It has no state of its own (the step is in the checkpoint), so it is
identical for any number of processes - unlike a scheduler handed to ``accelerator.prepare``, which
is stepped once per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pipeline.train.config import TrainConfig


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # biases and every normalisation weight (LayerNorm/RMSNorm are 1-D) are not decayed
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied weights appear once
            continue
        seen.add(id(param))
        (no_decay if _no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where the device supports it (CUDA, and CPU in recent torch).

    ``fused=False`` gives torch's default AdamW implementation (what the Hugging Face examples use;
    on CPU a per-parameter loop, several times slower than the fused kernel): benchmarks only.
    """
    groups = param_groups(model, cfg.weight_decay)
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if not fused:
        return torch.optim.AdamW(groups, **kwargs)
    device = next(model.parameters()).device
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass  # dtype/device combination without a fused kernel
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def warmup_steps(cfg: TrainConfig, max_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * max_steps))


def lr_schedule(cfg: TrainConfig, max_steps: int) -> Callable[[int], float]:
    """``lr_at(step)`` for optimizer step ``step`` (0-based): warmup, then the chosen decay."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warm = warmup_steps(cfg, max_steps)
    total = max(max_steps, 1)
    decay_start = total - int(round(cfg.decay_ratio * total))  # wsd: stable until here

    def lr_at(step: int) -> float:
        if step < warm:
            return peak * (step + 1) / warm
        if cfg.schedule == "constant":
            return peak
        if cfg.schedule == "wsd":
            if step < decay_start:
                return peak
            frac = (step - decay_start) / max(total - decay_start, 1)
            return peak + (floor - peak) * min(frac, 1.0)
        frac = min((step - warm) / max(total - warm, 1), 1.0)
        if cfg.schedule == "linear":
            return peak + (floor - peak) * frac
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * frac))  # cosine

    return lr_at


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
