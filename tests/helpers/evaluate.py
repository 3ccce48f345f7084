"""A tiny evaluation suite for `pipeline evaluate` tests (tests/evaluate/, tests/slurm/).

``write_suite(root)`` writes two synthetic sentiment tasks (``cats``: score = accuracy, ``dogs``:
score = mean of F1 and accuracy; label 1 iff the sentence mentions 'cat', learnable in tens of
steps), their `pipeline finetune` configs and a suite YAML; ``evaluate(out, suite, model, ...)``
runs the stage in this process with fast settings for every cell (``FAST``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.cli import main
from tests.helpers.finetune import write_sentiment
from tests.helpers.loop import reset_accelerate

# every cell: a tiny, fast recipe (tens of steps on 2 cores)
FAST = [
    "finetune.train.max_steps=12",
    "finetune.train.batch_size=16",
    "finetune.train.lr=3e-3",
    "finetune.train.warmup_steps=2",
    "finetune.train.log_every=4",
    "finetune.train.progress=false",
    "finetune.train.peak_tflops=1",
    "finetune.model.classifier_dropout=0.0",
]
TASKS = {"cats": (0, 160, ["accuracy"]), "dogs": (1, 120, ["f1", "accuracy"])}


def write_task(root: Path, name: str, seed: int, n: int) -> Path:
    """Train / dev tables and a `pipeline finetune` config for one sentiment task; returns the config."""
    train = write_sentiment(root / f"{name}-train.tsv", n, seed)
    dev = write_sentiment(root / f"{name}-dev.tsv", 40, seed + 10)
    config = {
        "task": {"type": "classification"},
        "data": {"train": str(train), "validation": str(dev), "max_length": 32},
        "model": {"init_from": "unused: evaluate sets it"},
        "output_dir": "unused: evaluate sets it",
        "train": {"max_steps": 100, "batch_size": 8, "lr": 1e-4, "eval_every": 0, "save_every": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_suite(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    suite = {
        name: {"config": str(write_task(root, name, seed, n)), "metrics": metrics}
        for name, (seed, n, metrics) in TASKS.items()
    }
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "seeds": [0, 1], "tasks": list(TASKS), "suite": suite}))
    return path


def evaluate(out: Path, suite: Path, model: Path, *overrides: str) -> int:
    reset_accelerate()
    return main(
        ["evaluate", "--config", str(suite), f"model={model}", f"output_dir={out}", *FAST, *overrides]
    )
