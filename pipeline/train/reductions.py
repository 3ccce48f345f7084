"""The loop's cross-process reductions: the loss scale of an optimizer step and the logged sums.

``global_loss_scale`` is what makes the objective independent of how the global batch is split:
one all-reduce of the step's loss-target count (masked tokens, labelled examples or tokens) over
every micro-batch and process, turned into the factor that makes the accumulated, data-parallel
gradient equal the gradient of (sum of losses) / (global target count).  It also carries the stop
flag of SIGTERM/SIGUSR1 so every process stops at the same step.  ``failed_anywhere`` lets every
process learn that a step of a collective job (loading or writing a checkpoint) failed on one of
them, so they give up together instead of waiting for each other forever.
"""

from __future__ import annotations

import torch

from pipeline.train.signals import StopSignal


class RunningSums:
    """Per-process running sums between log steps, kept on device (no host sync per step)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.values: dict[str, torch.Tensor] = {}
        self.targets = 0
        self.grad_norm = torch.zeros((), device=device)
        self.steps = 0

    def add(self, out: dict[str, torch.Tensor], targets: int) -> None:
        for key, value in out.items():
            if value.dim() != 0:  # only scalar sums are logged
                continue
            value = value.detach().float()
            self.values[key] = self.values[key] + value if key in self.values else value
        self.targets += targets

    def add_step(self, grad_norm: torch.Tensor) -> None:
        self.grad_norm = self.grad_norm + grad_norm.detach().float().to(self.device)
        self.steps += 1

    def reduce(self, accelerator) -> dict[str, float]:
        """One all-reduce; returns global means and resets."""
        keys = sorted(self.values)
        extra = torch.tensor([float(self.targets), float(self.steps)], device=self.device)
        local = torch.cat([torch.stack([self.values[k] for k in keys] + [self.grad_norm]), extra])
        total = accelerator.reduce(local, reduction="sum").tolist()
        self.__init__(self.device)
        targets, steps = max(total[-2], 1.0), max(total[-1], 1.0)
        out = {
            "train/loss": total[keys.index("loss_sum")] / targets,
            "train/grad_norm": total[len(keys)] / steps,
        }  # every process holds the same norm
        if "correct" in keys:
            out["train/accuracy"] = total[keys.index("correct")] / targets
        return out


def global_loss_scale(accelerator, micro_batches: list[dict], stop: StopSignal, grad_accum: int):
    """One all-reduce: the global target count (-> loss scale) and the stop flag (read lazily)."""
    local = sum(int(mb["num_targets"]) for mb in micro_batches)
    flags = torch.tensor(
        [float(local), float(stop.requested)], dtype=torch.float64, device=accelerator.device
    )
    total = accelerator.reduce(flags, reduction="sum")
    scale = (accelerator.num_processes * grad_accum) / total[0].clamp(min=1.0)
    return scale.float(), total[1]


def failed_anywhere(accelerator, error: BaseException | None) -> bool:
    """Collective: whether ``error`` is set on any process."""
    flag = torch.tensor(float(error is not None), device=accelerator.device)
    return float(accelerator.reduce(flag, reduction="sum")) > 0
