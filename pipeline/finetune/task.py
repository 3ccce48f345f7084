"""What a fine-tuning run learns: the ``task`` section of ``pipeline finetune`` and its task types.

One :data:`TaskType` for the whole package: table readers (classification / regression labels),
model heads (sequence vs token classification) and metrics all branch on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import REQUIRED, option

__all__ = ["DEFAULT_METRIC", "TaskConfig", "TaskType"]

TaskType = Literal["classification", "regression", "ner"]
# the metric that picks the exported model when train.metric_for_best is unset (greater is better)
DEFAULT_METRIC: dict[str, str] = {
    "classification": "eval/accuracy",
    "regression": "eval/pearson",
    "ner": "eval/f1",
}


@dataclass
class TaskConfig:
    """The ``task`` section of ``pipeline finetune``."""

    type: TaskType = option(REQUIRED, "classification | regression | ner")
