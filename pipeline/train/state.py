"""The trainer's resumable state: one typed object, saved in every checkpoint.

``TrainerState.state_dict()`` is what ``checkpoints/step_<N>/trainer_state.json`` holds besides the
file sizes (keys ``step``, ``best``, ``nonfinite_steps``); ``load_state_dict`` reads it back,
including files written before a key existed.  The data position is not stored: the batches of
step ``k`` are a pure function of ``(seed, k)``, so the step is the position, and the data epoch
is derived from it (:attr:`TrainerState.data_epoch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainerState", "no_epochs"]


def no_epochs(step: int) -> float:
    """``epoch_of`` for a task that does not say (logged as epoch 0)."""
    return 0.0


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    best: float | None = None  # best train.metric_for_best so far (None: not evaluated yet)
    nonfinite_steps: int = 0  # optimizer steps skipped for a non-finite gradient
    epoch_of: Callable[[int], float] = field(default=no_epochs, repr=False, compare=False)

    @property
    def data_epoch(self) -> float:
        """Passes over the training data made by ``step`` optimizer steps."""
        return self.epoch_of(self.step)

    def improves(self, value: float, greater_is_better: bool) -> bool:
        """Whether ``value`` beats the best metric so far."""
        if self.best is None:
            return True
        return value > self.best if greater_is_better else value < self.best

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "best": self.best, "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.best = state.get("best")
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
