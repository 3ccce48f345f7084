"""Tokenize a corpus in parallel and pack it into fixed-length shards for MLM pretraining.

Run: ``pipeline shard --config configs/shard/wikitext2.yaml [key=value ...]``.  On N machines
(e.g. a Slurm array job) run the same command with ``num_workers=N worker_index=i`` on each; the
last worker to finish merges (or run once more with ``merge=true``).  Rerunning after an
interruption resumes from the completed work units.  The output layout, packing and split rules
are described in ``pipeline/shards/format.py``; the work lives in ``pipeline/shards/``
(:func:`pipeline.shards.build_shards`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.shards import MANIFEST_NAME, build_shards
from pipeline.shards import ShardConfig as Config

__all__ = ["Config", "is_complete", "run"]


def run(cfg: Config) -> int:
    build_shards(cfg)
    return 0


def is_complete(cfg: Config) -> bool:
    """The manifest is written last, so a set that has one is complete."""
    return (Path(cfg.output_dir) / MANIFEST_NAME).is_file()
