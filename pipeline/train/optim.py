"""AdamW with the usual no-decay groups, and learning-rate schedules as pure functions of the step.

The schedule is a function ``lr_at(step)`` that the loop writes into the optimizer's param groups
before every optimizer step.  It has no state of its own (the step is in the checkpoint), so it is
identical for any number of processes - unlike a scheduler handed to ``accelerator.prepare``, which
is stepped once per process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from pipeline.train.config import TrainConfig


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    # biases and every normalisation weight (LayerNorm/RMSNorm are 1-D) are not decayed
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")  # BERT's encoder.layer.N., ModernBERT's layers.N.


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, N + 1 for encoder layer N, ``num_layers + 1`` for the rest (head,
    final norm, pooler, classifier): the depth layer-wise lr decay counts down from."""
    if "embed" in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: decayed and not decayed, and with ``layer_decay < 1`` one pair per depth,
    each with ``lr_scale = layer_decay ** (top - depth)`` (:func:`set_lr` applies it)."""
    named, seen = [], set()
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:  # tied weights appear once
            seen.add(id(param))
            named.append((name, param))
    layers = [int(m.group(1)) for name, _ in named if (m := _LAYER.search(name))]
    top = max(layers, default=-1) + 2  # the head's depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        depth = layer_depth(name, top - 1) if layer_decay < 1 else top
        skip = _no_decay(name, param)
        group = groups.setdefault(
            (depth, skip),
            {
                "params": [],
                "weight_decay": 0.0 if skip else weight_decay,
                "lr_scale": layer_decay ** (top - depth),
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]  # by depth, decayed (False) first at each


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where the device supports it (CUDA, and CPU in recent torch).

    ``fused=False`` gives torch's default AdamW implementation (what the Hugging Face examples use;
    on CPU a per-parameter loop, several times slower than the fused kernel): benchmarks only.
    """
    groups = param_groups(model, cfg.weight_decay, cfg.layer_lr_decay)
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
    """Write the schedule's lr into every group, scaled by its layer-wise ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
