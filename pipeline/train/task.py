"""What a training stage hands to the loop: a :class:`TrainTask` (model, batches, evaluation, export).

The contract between a stage and :func:`pipeline.train.fit`:

* ``model(**inputs)`` returns *summed* losses (``{"loss_sum": 0-d tensor, ...}``, optionally other
  sums such as ``"correct"``); labels the loss skips are :data:`IGNORE_INDEX`;
* ``make_batch(step, micro)`` returns this process's micro-batch: CPU tensors plus the
  :data:`COUNTERS` (loss targets and tokens, bookkeeping the loop reads and does not pass on);
* ``epoch_of(step)`` says how many passes over the training data ``step`` optimizer steps make
  (logged as ``train/epoch``);
* ``facts`` are constants of the run (e.g. the data's unigram entropy), logged once and summarised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.train.state import no_epochs

__all__ = ["COUNTERS", "IGNORE_INDEX", "TrainTask"]

COUNTERS = ("num_targets", "num_tokens")  # batch entries that are bookkeeping, not model inputs
IGNORE_INDEX = -100  # label of positions the loss skips (torch cross-entropy's ignore_index)


@dataclass
class TrainTask:
    """What a stage hands to :func:`pipeline.train.fit`."""

    # forward(**inputs) -> {"loss_sum": 0-d tensor, optional other sums e.g. "correct"}
    model: torch.nn.Module
    # (step, micro) -> this process's micro-batch (CPU tensors + COUNTERS)
    make_batch: Callable[[int, int], dict]
    # (accelerator, prepared model, dir); collective
    export: Callable[[object, torch.nn.Module, Path], None]
    # called on every process
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    flops_per_token: float = 0.0
    # (model, metrics, step)
    on_new_best: Callable[[torch.nn.Module, dict[str, float], int], None] | None = None
    # step -> passes over the training data (the data plan's GlobalBatchPlan.epoch_of)
    epoch_of: Callable[[int], float] = no_epochs
    # constants of the run worth a plot line (e.g. data/unigram_entropy): logged once at the first
    # step of every invocation and written to summary.json
    facts: dict[str, float] = field(default_factory=dict)
