"""The benchmark scripts stay runnable and their results say where they came from.

``bench/gpu.sh --dry-run`` runs every row kind of the GPU benchmark (compile rows included) for one
step on CPU: the GPU benchmark only runs for real where a GPU is lent, so this is what keeps its
code paths (HF recipe rows, every ablation variant, the results file) from rotting between such
runs.  ``bench/record.py`` keeps the raw results of any command (accuracy experiments).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN, DRY_RUN_BATCH = 128, 2  # bench.pretrain_throughput's sequence length; gpu.sh --batch-size


def gpu_script_rows() -> tuple[list[str], list[str]]:
    """(rows of the real GPU run, rows of the dry run) as bench/gpu.sh names them."""
    script = (REPO / "bench" / "gpu.sh").read_text()
    gpu_rows = re.search(r"^GPU_ROWS=(\S+)", script, re.M).group(1).split(",")
    dry = re.search(r'--configs "\$GPU_ROWS,(\S+)"', script).group(1).split(",")
    return gpu_rows, gpu_rows + dry


def assert_provenance(result: dict, command_part: str) -> None:
    """Every results file records its command, the git commit + dirty flag, and library versions."""
    import torch

    assert command_part in result["command"], result["command"]
    assert re.fullmatch(r"[0-9a-f]{40}", result["git"]["commit"]), result["git"]
    assert isinstance(result["git"]["dirty"], bool)
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["transformers"]


def bench_env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "PIPELINE_BENCH_CACHE": str(tmp_path / "cache"),
        "PIPELINE_BENCH_RESULTS": str(tmp_path / "results"),
    }


def run_bench(tmp_path: Path, module: str, args: list[str], name: str, data: Path | None = None) -> dict:
    """Run ``python -m bench.<module> ARGS`` with the test's cache and results folders (and
    ``PIPELINE_DATA`` when given); it must exit 0; returns ``results/<name>.json``."""
    env = {**bench_env(tmp_path), **({"PIPELINE_DATA": str(data)} if data else {})}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((tmp_path / "results" / f"{name}.json").read_text())


@pytest.mark.slow
def test_gpu_benchmark_dry_run_runs_every_row(tmp_path):
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--dry-run"],
        cwd=REPO,
        env=bench_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results" / "gpu_dry_run.json").read_text())
    assert_provenance(result, "--name gpu_dry_run")
    rows = {row["config"]: row for row in result["rows"]}
    gpu_rows, dry_rows = gpu_script_rows()
    assert list(rows) == dry_rows and set(gpu_rows) <= set(rows)  # every GPU row, compile included
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
    assert rows["fused"]["vs_hf"] > 0 and "| fused |" in result["table"]
    # the baseline is the HF recipe at its faster precision, chosen by alternating fp32 / bf16 steps
    calibration = result["hf_precision_calibration"]
    assert result["hf_baseline"] == ("bf16" if calibration["bf16_speedup_over_fp32"] > 1 else "no")
    assert rows["attn_fp32"]["precision"] == "fp32" and rows["hf_bf16"]["precision"] == "bf16"


@pytest.mark.slow
def test_finetune_benchmark_runs_every_row(tmp_path, shared_data):
    configs = "hf,hf_fp32,hf_bf16,ours_padded,ours,ours_fp32,ours_grouped"
    args = ["--size", "tiny", "--examples", "64", "--warmup", "0", "--steps", "1", "--rounds", "1"]
    args += ["--calibration-steps", "1", "--configs", configs]
    result = run_bench(tmp_path, "finetune_throughput", args, "finetune_throughput", shared_data)
    rows = {row["config"]: row for row in result["rows"]}
    assert list(rows) == configs.split(",")
    assert all(row["examples_per_s"] > 0 for row in rows.values()) and rows["ours"]["vs_hf"] > 0


def test_gpu_benchmark_names_only_known_rows():
    gpu_rows, dry_rows = gpu_script_rows()
    known = subprocess.run(
        [sys.executable, "-c", "from bench.pretrain_throughput import ROWS; print(','.join(ROWS))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert set(dry_rows) <= set(known.split(",")), set(dry_rows) - set(known.split(","))


def test_record_keeps_a_commands_results_with_its_provenance(tmp_path):
    output = tmp_path / "eval_results.json"
    writer = f"import json; json.dump({{'eval/accuracy': 0.75}}, open({str(output)!r}, 'w'))"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.record", "--name", "demo", "--collect", str(output), "--note", "a test",
         "--", sys.executable, "-c", writer],
        cwd=REPO, env=bench_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "demo.json").read_text())
    assert_provenance(result, writer)
    assert result["exit_code"] == 0 and result["note"] == "a test" and result["wall_s"] > 0
    assert result["outputs"] == {str(output): {"eval/accuracy": 0.75}}


def test_record_collects_an_earlier_runs_metrics_lines(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 600, "eval/loss": 4.7}\n{"step": 1200, "eval/loss": 4.3}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "bench.record", "--name", "curves", "--collect", str(metrics)],
        cwd=REPO, env=bench_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "curves.json").read_text())
    assert_provenance(result, "--name curves")  # no command run: the record names its own invocation
    assert result["outputs"] == {
        str(metrics): [{"step": 600, "eval/loss": 4.7}, {"step": 1200, "eval/loss": 4.3}]
    }


@pytest.mark.slow
def test_recipe_ablation_trains_each_rows_settings(tmp_path, shared_data):
    args = ["--steps", "4", "--rows", "8", "--only", "quickstart,bert_micro", "--name", "recipe_smoke"]
    result = run_bench(tmp_path, "recipe", args, "recipe_smoke", shared_data)
    assert_provenance(result, "--name recipe_smoke")
    assert [row["row"] for row in result["rows"]] == ["quickstart", "bert_micro"]
    for row, model_type in (("quickstart", "modernbert"), ("bert_micro", "bert")):  # the row's keys applied
        snapshot = tmp_path / "cache" / "recipe_smoke-runs" / row / "snapshots" / "step_4" / "config.json"
        assert json.loads(snapshot.read_text())["model_type"] == model_type
    assert all(row["probe_loss"] > 0 and row["probe_accuracy"] >= 0 for row in result["rows"])


@pytest.mark.slow
def test_time_to_loss_runs_both_sides_and_scores_them(tmp_path, shared_data):
    args = ["--budget", "6", "--sweep-budget", "3", "--lrs", "1e-3,3e-3", "--snapshots", "1", "--rows", "8"]
    args += ["--our-steps", "4", "--name", "ttl_smoke"]
    result = run_bench(tmp_path, "time_to_loss", args, "ttl_smoke", shared_data)
    assert_provenance(result, "--name ttl_smoke")
    assert [row["lr"] for row in result["hf"]["lr_sweep"]] == [1e-3, 3e-3]
    for side in ("hf", "ours"):  # both curves start at the untrained model, 0 s
        curve = result[side]["curve"]
        assert curve[0]["seconds"] == 0 and curve[-1]["seconds"] > 0 and len(curve) >= 2
    assert result["ours"]["curve"][-1]["step"] == 4
