"""launch/slurm/train.sbatch on a real (local) Slurm cluster: one node, two nodes, requeue, stop signal.

Run: ``python -m pytest tests/slurm/test_slurm_train.py -q`` (root; see conftest.py for the cluster).
Every job pretrains the tiny 2-layer BERT for a handful of steps on CPU, over gloo.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = "launch/slurm/train.sbatch"
SEQ_LEN, BATCH = 64, 4


def submit_pretrain(cluster, data, name: str, *, options=(), env=None, **train) -> tuple[str, Path]:
    """Submit a tiny pretrain run; returns (job id, output_dir).  ``train`` overrides train.* keys."""
    output_dir = data.work / name
    settings = {"max_steps": 6, "save_every": 3, "log_every": 1, "eval_every": 0, "eval_batches": 2, **train}
    overrides = [f"train.{key}={value}" for key, value in settings.items()]
    job_id = cluster.submit(
        SCRIPT,
        "pretrain",
        "--config",
        "configs/pretrain/tiny_cpu.yaml",
        f"data.shards={data.shards}",
        f"output_dir={output_dir}",
        f"train.batch_size={BATCH}",
        "train.peak_tflops=1",
        "train.progress=false",
        *overrides,
        options=(
            f"--job-name={name}",
            f"--output={data.work}/logs/%x-%j.out",
            "--cpus-per-task=1",
            "--time=15",
            *options,
        ),
        # the script's default launch/accelerate/ddp.yaml, in fp32 (its bf16 is slow on CPUs)
        env={"ACCEL_ARGS": "--mixed_precision no", **(env or {})},
    )
    return job_id, output_dir


def job_log(data, name: str, job_id: str) -> str:
    return (data.work / "logs" / f"{name}-{job_id}.out").read_text(errors="replace")


def assert_finished_run(output_dir: Path, processes: int) -> None:
    """Checkpoint with one RNG state per process, a loadable final/ model, a completed summary."""
    from transformers import AutoModelForMaskedLM

    step_6 = output_dir / "checkpoints" / "step_6"
    assert (step_6 / "trainer_state.json").is_file()
    assert sorted(p.name for p in step_6.glob("random_states_*.pkl")) == [
        f"random_states_{rank}.pkl" for rank in range(processes)
    ]
    model = AutoModelForMaskedLM.from_pretrained(output_dir / "final")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 10, 11, 3]])).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 6
    # the global batch spans every process: 6 steps x processes x batch x seq_len tokens
    assert summary["tokens_this_run"] == 6 * processes * BATCH * SEQ_LEN


def test_one_node_gpu_count_sets_processes(slurm_cluster, tiny_data):
    # 2 (fake) GPUs allocated -> 2 processes on the node
    job_id, out = submit_pretrain(
        slurm_cluster, tiny_data, "one-node", options=("--nodes=1", "--gpus-per-node=2")
    )
    (job,) = slurm_cluster.wait(job_id)
    log = job_log(tiny_data, "one-node", job_id)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), log
    assert "on 1 node(s)" in log and "2 process(es) per node (2 GPU(s)), num_processes 2" in log
    assert "accelerate config launch/accelerate/ddp.yaml" in log
    assert "machine_rank 0" in log and "run completed" in log
    assert_finished_run(out, processes=2)


def test_two_nodes_cpu_fallback(slurm_cluster, tiny_data):
    if len(slurm_cluster.nodes) < 2:
        pytest.skip("two simulated nodes need `unshare --uts --mount` (CAP_SYS_ADMIN)")
    # no GPUs -> PROCS_PER_NODE (default 1) processes per node; the two nodes form one gloo group
    job_id, out = submit_pretrain(
        slurm_cluster, tiny_data, "two-nodes", options=("--nodes=2", "--gpus-per-node=0")
    )
    (job,) = slurm_cluster.wait(job_id)
    log = job_log(tiny_data, "two-nodes", job_id)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), log
    port = 29500 + int(job_id) % 10000
    assert (
        f"on 2 node(s) [n[1-2]], 1 process(es) per node (0 GPU(s)), num_processes 2, main process n1:{port}"
        in log
    )
    assert "n1: machine_rank 0" in log and "n2: machine_rank 1" in log
    assert_finished_run(out, processes=2)


def test_checkpointed_run_is_requeued_and_resumes(slurm_cluster, tiny_data):
    # train.stop_after=3 stands in for the time-limit signal, deterministically: the first run stops
    # at step 3 with a checkpoint, the script requeues the job, and the second run resumes to step 6.
    # (The test cluster holds a requeued job 10 s instead of Slurm's 120: cred_expire in slurm.conf.)
    job_id, out = submit_pretrain(
        slurm_cluster,
        tiny_data,
        "requeue",
        options=("--gpus-per-node=0",),
        env={"PROCS_PER_NODE": "1"},
        stop_after=3,
    )
    (job,) = slurm_cluster.wait(job_id, timeout=400)
    log = job_log(tiny_data, "requeue", job_id)
    assert (job.state, job.exit_code, job.restarts) == ("COMPLETED", 0, 1), log
    first, second = log.split(f"job {job_id} (restart 1)")
    assert "run checkpointed" in first and f"requeueing job {job_id}" in first
    assert f"resumed from {out}/checkpoints/step_3 at step 3" in second and "run completed" in second
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and (summary["steps"], summary["steps_this_run"]) == (6, 3)
    assert (out / "final" / "model.safetensors").is_file()


def test_stop_signal_reaches_every_process_and_checkpoints(slurm_cluster, tiny_data):
    # What Slurm does before the time limit (--signal=B:USR1@...): signal the batch shell only.
    # REQUEUE=0 makes the script end with 75 ("checkpointed, not finished") instead of requeueing.
    nodes = len(slurm_cluster.nodes)
    job_id, out = submit_pretrain(
        slurm_cluster,
        tiny_data,
        "signal",
        options=(f"--nodes={nodes}", "--gpus-per-node=0"),
        env={"REQUEUE": "0"},
        max_steps=100000,
        save_every=0,
    )
    metrics = out / "metrics.jsonl"

    def training_or_ended(jobs) -> bool:  # signal only once steps run: the stop handlers are in place
        return jobs[0].state not in ("PENDING", "RUNNING") or (
            metrics.exists() and metrics.stat().st_size > 0
        )

    slurm_cluster.wait(job_id, until=training_or_ended)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    (job,) = slurm_cluster.wait(job_id)
    log = job_log(tiny_data, "signal", job_id)
    assert (job.state, job.exit_code) == ("FAILED", 75), log
    assert "received SIGUSR1: forwarding it" in log and "run checkpointed (after a stop signal)" in log
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["completed"] and 0 < summary["steps"] < 100000
    step = summary["steps"]
    assert (out / "checkpoints" / f"step_{step}" / "trainer_state.json").is_file()
    ranks = sorted(p.name for p in (out / "checkpoints" / f"step_{step}").glob("random_states_*.pkl"))
    assert ranks == [f"random_states_{r}.pkl" for r in range(nodes)]
    assert not (out / "final").exists()
    assert re.search(rf"stop signal received: checkpointing at step {step}", log)
