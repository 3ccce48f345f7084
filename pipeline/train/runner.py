"""What every training stage does around its own model and data: create the Accelerator, check
and record the output directory, build the stage's task, run the shared loop, write summary.json
(with the precision the run used and why, see ``pipeline.train.precision``).

Exit codes: 0 = finished; 75 (EX_TEMPFAIL) = a stop signal or ``train.stop_after`` checkpointed the
run before ``max_steps``; rerun the same command to continue.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.config import save_config
from pipeline.errors import PipelineError
from pipeline.io import write_json
from pipeline.train.accel import DEFAULT_MATMUL_DIMS, make_accelerator, precision_of
from pipeline.train.loop import FitHooks, fit

EXIT_STOPPED = 75
SUMMARY_FILE = "summary.json"
MIN_FREE_BYTES = 100 * 2**20  # refuse to start with less than this free: checkpoints would fail later


def prepare_output_dir(path: str | Path, cfg, accelerator=None) -> Path:
    """Create ``path``, check it is writable and has space, write ``config.yaml`` (main process)."""
    path = Path(path)
    main = accelerator is None or accelerator.is_main_process
    if main:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write_test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise PipelineError(f"output_dir {path} is not writable: {e.strerror or e}") from None
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:
            raise PipelineError(
                f"output_dir {path} has only {free / 2**20:.0f} MiB free; need at least 100 MiB"
            )
        save_config(cfg, path / "config.yaml")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return path


def run_training_stage(
    cfg,
    build_task: Callable,
    on_complete: Callable[[Path], None] | None = None,
    *,
    hooks: FitHooks | None = None,
    matmul_dims: tuple[int, int] = DEFAULT_MATMUL_DIMS,
) -> int:
    """Run a training stage whose config ``cfg`` has ``output_dir`` and a ``train`` section.

    ``build_task(cfg, accelerator, output_dir) -> (TrainTask, TrainConfig)`` returns the task and
    the ``train`` section as it resolved it (e.g. epochs -> steps, the default best metric);
    ``on_complete(output_dir)`` runs on the main process after a finished run; ``hooks`` go to
    :func:`~pipeline.train.loop.fit`; ``matmul_dims`` = the model's (hidden size, feed-forward width)
    for ``train.precision=auto``.  Returns the exit code."""
    accelerator = make_accelerator(cfg.train, cfg.output_dir, matmul_dims=matmul_dims)
    output_dir = prepare_output_dir(cfg.output_dir, cfg, accelerator)
    task, train = build_task(cfg, accelerator, output_dir)
    hparams = dataclasses.replace(cfg, train=train)  # what the run trains with, in TensorBoard
    summary = fit(accelerator, train, task, output_dir, hparams, hooks=hooks)
    summary["precision"] = precision_of(accelerator).record()
    if accelerator.is_main_process:
        write_json(output_dir / SUMMARY_FILE, summary, default=str)
        if summary["completed"] and on_complete is not None:
            on_complete(output_dir)
    return 0 if summary["completed"] else EXIT_STOPPED


def run_completed(output_dir: str | Path) -> bool:
    """Whether the last invocation of a training stage in ``output_dir`` ran to ``max_steps``."""
    try:
        return bool(json.loads((Path(output_dir) / SUMMARY_FILE).read_text())["completed"])
    except (OSError, ValueError, KeyError):
        return False
