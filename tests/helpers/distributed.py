"""Harness for the multi-process CPU tests (tests/distributed/): a tiny shard set, and `pipeline
pretrain` runs launched as subprocesses - single process, or `accelerate launch --num_processes 2`
with one of the shipped launch configs (launch/accelerate/*.yaml) - plus readers for what the runs
leave behind.

The launch configs are used as users use them, with ``--num_processes N --mixed_precision no``
on the command line (CPU, fp32).  What CPU needs on top is environment only: ``DS_ACCELERATOR=cpu``
for DeepSpeed and ``PIPELINE_CPU_FSDP=1`` for FSDP (see ``pipeline/train/accel.py``).  Every launched
run also writes what each process really trained with (``PIPELINE_TEST_BACKEND_REPORT``, read by
:func:`backend_reports`).  Warnings are not silenced: a skipped checkpoint shows in the run's log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_CONFIGS = ROOT / "launch" / "accelerate"
RUN_TIMEOUT_S = 300  # one launch normally takes 10-30 s on 2 cores; this only catches hangs
STOPPED = "stopped"  # expect= value: the run checkpoints and exits early (train.stop_after)


@dataclass(frozen=True)
class Backend:
    name: str
    config_file: str  # under launch/accelerate/
    env: dict[str, str] = field(default_factory=dict)
    requires: str | None = None  # optional package the backend needs


BACKENDS = {
    "ddp": Backend("ddp", "ddp.yaml"),
    "fsdp2": Backend("fsdp2", "fsdp.yaml", {"PIPELINE_CPU_FSDP": "1"}),
    "zero2": Backend("zero2", "zero2.yaml", {"DS_ACCELERATOR": "cpu"}, requires="deepspeed"),
    "zero3": Backend("zero3", "zero3.yaml", {"DS_ACCELERATOR": "cpu"}, requires="deepspeed"),
}


def synthetic_corpus(path: Path, lines: int = 600, seed: int = 0) -> Path:
    """Zipf-distributed pseudo-words (some multi-piece), so a tiny MLM has something to learn."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "pe", "dan", "gor", "il"]
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(400)]
    ranks = np.arange(1, len(words) + 1)
    probs = (1.0 / ranks) / (1.0 / ranks).sum()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choice(words, size=rng.integers(8, 40), p=probs)) + " .\n")
    return path


def build_shards(workdir: Path) -> Path:
    """Tokenizer + shard set (seq_len 64) from the synthetic corpus, through the real stages."""
    corpus = synthetic_corpus(workdir / "corpus.txt")
    tokenizer, shards = workdir / "tokenizer", workdir / "shards"
    run_stage(
        [
            "tokenizer",
            f"input=[{corpus}]",
            f"output_dir={tokenizer}",
            "vocab_size=600",
            "model_type=wordpiece",
            "min_frequency=1",
        ],
        workdir / "tokenizer.log",
    )
    run_stage(
        [
            "shard",
            f"input=[{corpus}]",
            f"tokenizer={tokenizer}",
            f"output_dir={shards}",
            "seq_len=64",
            "val_fraction=0.05",
            "num_proc=1",
            "progress=false",
        ],
        workdir / "shard.log",
    )
    return shards


def pretrain_overrides(shards: Path, output_dir: Path, **train) -> list[str]:
    """A tiny fp32 BERT with dropout 0 (runs are comparable step by step), every step logged."""
    settings = {
        "max_steps": 8,
        "batch_size": 2,
        "grad_accum": 1,
        "lr": 1e-3,
        "warmup_steps": 2,
        "eval_every": 4,
        "eval_batches": 2,
        "save_every": 4,
        "log_every": 1,
        "peak_tflops": 1.0,
        "progress": False,
        "prefetch": 2,
        "seed": 0,
        "resume": "auto",
    } | train
    return [
        f"data.shards={shards}",
        f"output_dir={output_dir}",
        "model.arch=bert",
        "model.preset=tiny",
        "model.dropout=0.0",
        "model.max_position_embeddings=64",
        *(f"train.{key}={value}" for key, value in settings.items()),
    ]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",  # 2 cores, 2 processes; also keeps single/multi-process numerics close
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra)
    return env


def _run(cmd: list[str], log: Path, env: dict[str, str], expect: int | str = 0) -> int:
    """Run ``cmd`` in its own process group (the launcher's workers die with it on a timeout).

    ``expect=STOPPED``: `pipeline pretrain` exits with 75 after checkpointing on a stop request;
    under `accelerate launch` torchrun reports any non-zero worker exit as its own exit code 1."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(
                f"timed out after {RUN_TIMEOUT_S} s: {' '.join(cmd)}\n{_tail(log)}"
            ) from None
    stopped_ok = (
        expect == STOPPED and code != 0 and "checkpointing at step" in log.read_text(errors="replace")
    )
    if code != expect and not stopped_ok:
        raise AssertionError(f"exit code {code}, expected {expect}: {' '.join(cmd)}\n{_tail(log)}")
    return code


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_stage(args: list[str], log: Path) -> None:
    """`pipeline <args>` in one plain process."""
    _run([sys.executable, "-m", "pipeline", *args], log, _env({}))


def run_launched_stage(backend: Backend, stage_args: list[str], log: Path, processes: int = 2) -> None:
    """Any stage under `accelerate launch` (to completion)."""
    _run(launch_stage_cmd(backend, stage_args, processes), log, _env(backend.env))


def run_single(shards: Path, output_dir: Path, expect: int | str = 0, **train) -> Path:
    """`pipeline pretrain` in one plain process (no launcher)."""
    _run(
        [sys.executable, "-m", "pipeline", "pretrain", *pretrain_overrides(shards, output_dir, **train)],
        run_log(output_dir, stopped=bool(expect)),
        _env({}),
        expect=75 if expect == STOPPED else expect,
    )
    return output_dir


def _free_port() -> int:
    with socket.socket() as s:  # other test sessions may launch at the same time: no fixed port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(backend: Backend, shards: Path, output_dir: Path, processes: int = 2, **train) -> list[str]:
    """`accelerate launch --config_file <backend's yaml> --num_processes N -m pipeline pretrain ...`"""
    return launch_stage_cmd(
        backend, ["pretrain", *pretrain_overrides(shards, output_dir, **train)], processes
    )


def launch_stage_cmd(backend: Backend, stage_args: list[str], processes: int = 2) -> list[str]:
    """`accelerate launch --config_file <backend's yaml> --num_processes N -m pipeline <stage_args>`"""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(LAUNCH_CONFIGS / backend.config_file),
        "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
        "--main_process_port", str(_free_port()),
        "-m", "pipeline", *stage_args,
    ]  # fmt: skip


def run_log(output_dir: Path, stopped: bool = False) -> Path:
    """The log of the last :func:`run_launched` / :func:`run_single` call on ``output_dir``."""
    return output_dir.with_name(output_dir.name + f".{'stopped' if stopped else 'run'}.log")


def report_dir(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".backend")


def run_launched(
    backend: Backend, shards: Path, output_dir: Path, expect: int | str = 0, processes: int = 2, **train
) -> Path:
    """Run :func:`launch_cmd` to completion (or to a checkpointed stop with ``expect=STOPPED``)."""
    env = _env({**backend.env, "PIPELINE_TEST_BACKEND_REPORT": str(report_dir(output_dir))})
    cmd = launch_cmd(backend, shards, output_dir, processes, **train)
    _run(cmd, run_log(output_dir, stopped=bool(expect)), env, expect=expect)
    return output_dir


def backend_reports(output_dir: Path) -> list[dict]:
    """What each process of the last launched run held (``pipeline.train.accel.backend_report``)."""
    files = sorted(report_dir(output_dir).glob("rank*.json"))
    return [json.loads(f.read_text()) for f in files]


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


def assert_resumed(output_dir: Path, step: int, total: int, log: Path | None = None) -> None:
    """The last run in ``output_dir`` loaded ``checkpoints/step_<step>`` and trained only the rest:
    summary.json's ``steps_this_run``, the loop's log line, and no checkpoint skipped on the way."""
    text = (log or run_log(output_dir)).read_text(encoding="utf-8", errors="replace")
    assert summary(output_dir)["steps_this_run"] == total - step, summary(output_dir)
    assert f"resumed from {output_dir / 'checkpoints' / f'step_{step}'} at step {step}" in text, _tail(
        log or run_log(output_dir)
    )
    assert "falling back to the previous checkpoint" not in text, _tail(log or run_log(output_dir))


def train_records(output_dir: Path) -> dict[int, dict]:
    """step -> the train scalars of that step from metrics.jsonl (a resumed run appends)."""
    records = {}
    for line in (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            records[record["step"]] = record
    return records


def final_weights(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(output_dir / "final" / "model.safetensors"))


def final_logits(output_dir: Path, input_ids):
    """Logits of ``final/`` loaded with the Auto class alone (no project code involved)."""
    import torch
    from transformers import AutoModelForMaskedLM

    model, info = AutoModelForMaskedLM.from_pretrained(output_dir / "final", output_loading_info=True)
    missing = set(info["missing_keys"]) | set(info["unexpected_keys"])
    assert not missing, f"{output_dir}/final: missing or unexpected weights {sorted(missing)}"
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
