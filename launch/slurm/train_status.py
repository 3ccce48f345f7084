"""Helper of ``launch/slurm/train.sbatch``: where a training run writes, and how its last invocation ended.

Run (the sbatch script does, from the repository root):

    python -m launch.slurm.train_status output-dir pretrain --config configs/pretrain/tiny_cpu.yaml [key=value ...]
        Resolves the stage config exactly as ``pipeline <stage>`` does and prints its ``output_dir``.
        A bad config is reported as one ``error: ...`` line with exit code 2, before any node starts.

    python -m launch.slurm.train_status stamp OUTPUT_DIR
        Prints a stamp of ``OUTPUT_DIR/summary.json`` (inode, mtime, size) or ``none``: taken
        before a run starts.

    python -m launch.slurm.train_status outcome OUTPUT_DIR --stamp STAMP
        Prints ``completed``, ``checkpointed`` (a stop signal or ``train.stop_after`` ended the run
        early after writing a checkpoint: resubmit to continue) or ``unknown`` (no new
        ``summary.json`` since STAMP was taken, e.g. the run crashed).  Stamps, not clocks, decide
        what is new: a shared filesystem's server clock may differ from the node's.

Why not the exit code: under ``accelerate launch`` with several processes, torchrun reports any
non-zero worker exit (the stage's 75 = "checkpointed, not finished") as a plain failure (1), so
the summary the training stage writes at the end of every invocation is the reliable record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUMMARY_NAME = "summary.json"


def resolved_output_dir(stage: str, stage_args: list[str]) -> str:
    """``output_dir`` of ``pipeline <stage> <stage_args>`` after defaults < YAML < overrides."""
    from pipeline.cli import build_parser, stage_module
    from pipeline.config import load_config
    from pipeline.stages import STAGES

    if stage not in STAGES:
        raise SystemExit(f"error: unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    args = build_parser(stage).parse_args(stage_args)
    cfg = load_config(stage_module(stage).Config, args.config, args.overrides)
    if not hasattr(cfg, "train"):
        raise SystemExit(f"error: {stage!r} is not a training stage (it has no train section)")
    return str(cfg.output_dir)


def summary_stamp(output_dir: Path) -> str:
    """Identity of the current summary file: the stage replaces it atomically, so a new one differs."""
    try:
        st = (output_dir / SUMMARY_NAME).stat()
    except OSError:
        return "none"
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def run_outcome(output_dir: Path, stamp: str) -> str:
    """``completed`` / ``checkpointed`` from a summary written after ``stamp`` was taken, else ``unknown``."""
    if summary_stamp(output_dir) == stamp:
        return "unknown"  # none written, or the one left by an earlier invocation
    try:
        completed = json.loads((output_dir / SUMMARY_NAME).read_text(encoding="utf-8"))["completed"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return "completed" if completed else "checkpointed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    out = commands.add_parser("output-dir", help="print the resolved output_dir of a stage invocation")
    out.add_argument("stage")
    out.add_argument("stage_args", nargs=argparse.REMAINDER, help="--config FILE and key=value overrides")
    stamp = commands.add_parser("stamp", help="stamp of OUTPUT_DIR/summary.json, taken before a run")
    stamp.add_argument("output_dir", type=Path)
    outcome = commands.add_parser("outcome", help="how the invocation started after STAMP ended")
    outcome.add_argument("output_dir", type=Path)
    outcome.add_argument("--stamp", required=True, help="what `stamp` printed before the run")
    args = parser.parse_args(argv)

    if args.command == "stamp":
        print(summary_stamp(args.output_dir))
        return 0
    if args.command == "outcome":
        print(run_outcome(args.output_dir, args.stamp))
        return 0
    from pipeline.errors import PipelineError

    try:
        print(resolved_output_dir(args.stage, args.stage_args))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
