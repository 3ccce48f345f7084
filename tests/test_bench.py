"""The benchmark scripts stay runnable: ``bench/gpu.sh --dry-run`` runs every row kind for one step.

The GPU benchmark only runs for real where a GPU is lent, so this CPU dry run is what keeps its code
paths (HF recipe rows, every ablation variant, the results file) from rotting between such runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_dry_run_runs_every_row(tmp_path):
    env = {
        **os.environ,
        "PIPELINE_BENCH_CACHE": str(tmp_path / "cache"),
        "PIPELINE_BENCH_RESULTS": str(tmp_path / "results"),
    }
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results" / "gpu_dry_run.json").read_text())
    rows = {row["config"]: row for row in result["rows"]}
    script = (REPO / "bench" / "gpu.sh").read_text()
    dry_run_configs = script.split("--configs ")[1].split()[0].split(",")
    assert list(rows) == dry_run_configs
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
    assert rows["fused"]["vs_hf"] > 0 and "| fused |" in result["table"]


def test_gpu_benchmark_names_only_known_rows():
    script = (REPO / "bench" / "gpu.sh").read_text()
    named = {name for part in script.split("--configs ")[1:] for name in part.split()[0].split(",")}
    known = subprocess.run(
        [sys.executable, "-c", "from bench.pretrain_throughput import ROWS; print(','.join(ROWS))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert named <= set(known.split(",")), named - set(known.split(","))
