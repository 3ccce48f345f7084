"""Every YAML under configs/ resolves against its stage's typed config (no unknown keys, right types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import stage_module
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CASES = [(p, p.parent.name) for p in sorted((ROOT / "configs").glob("*/*.yaml"))] + [
    (ROOT / "configs" / "quickstart.yaml", "run")
]


@pytest.mark.parametrize("path, stage", CASES, ids=[f"{s}:{p.name}" for p, s in CASES])
def test_shipped_config_resolves(path, stage):
    cfg = load_config(stage_module(stage).Config, path)
    assert cfg.output_dir
