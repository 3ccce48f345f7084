"""Run logging: TensorBoard (through Accelerate's tracker), ``metrics.jsonl`` and the progress bar.

Only the main process writes.  TensorBoard events go to ``<output_dir>/tensorboard/``; each line of
``metrics.jsonl`` is one JSON object with ``step`` and the values logged at that step, with the
same names as the TensorBoard scalars (``train/loss``, ``eval/accuracy``, ...).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm.auto import tqdm

from pipeline.config import flatten


def _hparam_value(value):
    # TensorBoard hparams accept scalars and strings only
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


class RunLogger:
    """Writes scalars to TensorBoard + metrics.jsonl, and drives the main-process progress bar."""

    def __init__(
        self, accelerator, output_dir: Path, config, total_steps: int, start_step: int, progress: bool
    ):
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.jsonl = Path(output_dir) / "metrics.jsonl"
        hparams = {k: _hparam_value(v) for k, v in flatten(config).items()}
        # run name "" puts the events directly in <output_dir>/tensorboard
        accelerator.init_trackers("", config=hparams)
        self.bar = None
        if self.main and progress:
            self.bar = tqdm(
                total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, file=sys.stderr
            )

    def log(self, step: int, values: dict[str, float]) -> None:
        values = {k: float(v) for k, v in values.items()}
        self.accelerator.log(values, step=step)
        if self.main:
            record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.bar is not None and "train/loss" in values:
            self.bar.set_postfix(
                loss=f"{values['train/loss']:.4f}", tok_s=f"{values.get('train/tokens_per_sec', 0):.0f}"
            )

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.accelerator.end_training()
