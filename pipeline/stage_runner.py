"""What every training stage does around its own model and data: create the Accelerator, check
and record the output directory, build the stage's task, run the shared loop, write summary.json.

Exit codes: 0 = finished; 75 (EX_TEMPFAIL) = a stop signal or ``train.stop_after`` checkpointed the
run before ``max_steps``; rerun the same command to continue.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.accel import make_accelerator
from pipeline.io import write_json
from pipeline.loop import fit
from pipeline.outputs import prepare_output_dir

EXIT_STOPPED = 75


def run_training_stage(cfg, build_task: Callable, on_complete: Callable[[Path], None] | None = None) -> int:
    """``build_task(cfg, accelerator, output_dir) -> (TrainTask, GlobalBatchPlan)`` (it may resolve
    ``cfg.train``, e.g. epochs -> steps); ``on_complete(output_dir)`` runs on the main process after
    a finished run."""
    accelerator = make_accelerator(cfg.train, cfg.output_dir)
    output_dir = prepare_output_dir(cfg.output_dir, cfg, accelerator)
    task, plan = build_task(cfg, accelerator, output_dir)
    summary = fit(accelerator, cfg.train, task, output_dir, cfg, epoch_of=plan.epoch_of)
    if accelerator.is_main_process:
        write_json(output_dir / "summary.json", summary, default=str)
        if summary["completed"] and on_complete is not None:
            on_complete(output_dir)
    return 0 if summary["completed"] else EXIT_STOPPED
