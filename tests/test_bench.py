"""The benchmark scripts stay runnable: ``bench/gpu.sh --dry-run`` runs every row kind of the
pretraining benchmark for one step, and the fine-tuning benchmark runs every row for one step.

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
    # the baseline is the HF recipe at its faster precision, chosen by alternating fp32 / bf16 steps
    calibration = result["hf_precision_calibration"]
    assert result["hf_baseline"] == ("bf16" if calibration["bf16_speedup_over_fp32"] > 1 else "no")
    assert rows["attn_fp32"]["precision"] == "fp32" and rows["hf_bf16"]["precision"] == "bf16"


@pytest.mark.slow
def test_finetune_benchmark_runs_every_row(tmp_path, shared_data):
    env = {
        **os.environ,
        "PIPELINE_BENCH_CACHE": str(tmp_path / "cache"),
        "PIPELINE_BENCH_RESULTS": str(tmp_path / "results"),
        "PIPELINE_DATA": str(shared_data),
    }
    configs = "hf,hf_fp32,hf_bf16,ours_padded,ours,ours_fp32,ours_grouped"
    args = ["--size", "tiny", "--examples", "64", "--warmup", "0", "--steps", "1", "--rounds", "1"]
    args += ["--calibration-steps", "1", "--configs", configs]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.finetune_throughput", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results" / "finetune_throughput.json").read_text())
    rows = {row["config"]: row for row in result["rows"]}
    assert list(rows) == configs.split(",")
    assert all(row["examples_per_s"] > 0 for row in rows.values()) and rows["ours"]["vs_hf"] > 0


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
