"""Helpers shared by the benchmarks in ``bench/``: environment, machine description, peak FLOP/s,
steady-state step statistics, the printed table and the results JSON.

Not run directly; every benchmark imports it (run them from the repository root as
``python -m bench.<name>``).  Results go to ``bench/results/<name>.json`` with :func:`provenance`
(the exact command line, the git commit and whether the tree had uncommitted changes) and the
machine description (CPU/GPU, library versions, date, load), so a number in the README can always
be traced back to a file and the code that produced it.  ``bench/record.py`` does the same for any
command (accuracy experiments: the quickstart, fine-tuning comparisons).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("PIPELINE_BENCH_RESULTS", REPO / "bench" / "results"))
DATA_DIR = Path(os.environ.get("PIPELINE_DATA", REPO.parent / "shared" / "data"))
CACHE_DIR = Path(os.environ.get("PIPELINE_BENCH_CACHE", "/tmp/pipeline-bench"))


def quiet_environment() -> None:
    """Offline, no tokenizer thread pools fighting the training threads, no progress-bar noise."""
    for key, value in {
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(key, value)
    import warnings

    warnings.filterwarnings("ignore")


def _cpu_model() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?"
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return model, set(flags)


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on (stored with every result)."""
    import accelerate
    import torch
    import transformers

    model, flags = _cpu_model()
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_bf16_hardware": sorted(flags & {"amx_bf16", "avx512_bf16", "amx_tile"})
        or "none (no AMX / AVX512-BF16)",
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_state() -> dict:
    """The commit the code ran at and whether the working tree differed from it (uncommitted or
    untracked files outside bench/results/, which the run itself writes)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        status = git("status", "--porcelain", "--untracked-files=all").splitlines()
        changed = [line[3:] for line in status if not line[3:].startswith("bench/results/")]
        return {
            "commit": git("rev-parse", "HEAD").strip(),
            "dirty": bool(changed),
            "changed_files": changed[:20],
        }
    except (OSError, subprocess.CalledProcessError) as e:
        return {"commit": None, "dirty": None, "error": str(e)}


def provenance(command: list[str] | None = None) -> dict:
    """What a results file must say about how it was made: the command and the code's git state."""
    argv = command or ["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]
    return {"command": " ".join(argv), "git": git_state()}


def measure_peaks(device: str = "cpu", seconds: float = 2.0) -> dict[str, float]:
    """Measured dense-matmul FLOP/s in fp32 and bf16 (pipeline.train.throughput's probe, run longer and
    re-run on every call: on a shared machine call it once per round and keep the best)."""
    import torch

    from pipeline.train import throughput
    from pipeline.train.throughput import measure_peak_flops

    dev = torch.device(device)
    throughput._PROBE_CACHE.clear()
    return {
        "fp32": measure_peak_flops(dev, torch.float32, seconds=seconds),
        "bf16": measure_peak_flops(dev, torch.bfloat16, seconds=seconds),
    }


def best_known_peaks(device: str, probe: dict[str, float]) -> dict[str, float]:
    """The best matmul FLOP/s ever measured on this machine (``probe`` included), per dtype.

    On a shared machine a probe taken while other jobs run reads low, and MFU against it reads
    high; the hardware's peak is the best it has shown, so MFU uses that.  Kept in
    ``$PIPELINE_BENCH_CACHE/peak-flops.json`` keyed by the device description."""
    import torch

    key = torch.cuda.get_device_name(0) if device == "cuda" else f"{_cpu_model()[0]} x{os.cpu_count()}"
    path = CACHE_DIR / "peak-flops.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    best = {dtype: max(value, known.get(key, {}).get(dtype, 0.0)) for dtype, value in probe.items()}
    known[key] = best
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=2) + "\n")
    return best


def steady_state(durations: list[float], warmup: int) -> dict[str, float]:
    """Statistics of ``durations`` after dropping the first ``warmup`` (compile, allocator, caches)."""
    kept = durations[warmup:]
    if not kept:
        raise ValueError(f"need more than {warmup} timed steps, got {len(durations)}")
    return {
        "median_s": statistics.median(kept),
        "mean_s": statistics.fmean(kept),
        "min_s": min(kept),
        "steps": len(kept),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def format_value(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, fmt) if fmt else str(value)


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Print (and return) a Markdown table; ``columns`` = (key, header, format spec)."""
    header = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(format_value(row.get(k), f) for k, _, f in columns) + " |" for row in rows]
    text = "\n".join([f"\n### {title}\n", header, rule, *body, ""])
    print(text, flush=True)
    return text


def write_results(name: str, payload: dict, machine: dict, command: list[str] | None = None) -> Path:
    """Write ``bench/results/<name>.json`` atomically, with :func:`provenance` (the command line,
    default this benchmark's, and the git commit + dirty flag) and ``machine`` (from
    :func:`machine_info`, taken when the benchmark started)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, **provenance(command), "machine": machine, **payload}
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"results written to {path}")
    return path
