"""launch/slurm/shard_array.sbatch on a real (local) Slurm cluster: a 2-task array job shards the
tiny corpus (the last task to finish merges) into the same set a single-process run writes.

Run: ``python -m pytest tests/slurm/test_slurm_shard.py -q`` (root; see conftest.py for the cluster).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_array_job_matches_single_process_shards(slurm_cluster, tiny_data):
    output_dir, logs_dir = tiny_data.work / "shards-array", tiny_data.work / "logs"
    array_id = slurm_cluster.submit(
        "launch/slurm/shard_array.sbatch",
        *tiny_data.shard_args,
        f"output_dir={output_dir}",
        options=(
            "--array=0-1",
            "--cpus-per-task=1",
            "--time=10",
            f"--output={logs_dir}/%x-%A_%a.out",
        ),
    )
    # the documented fallback merge: a plain job after the array; here the last task has merged already
    merge_id = slurm_cluster.submit(
        "launch/slurm/shard_array.sbatch",
        *tiny_data.shard_args,
        f"output_dir={output_dir}",
        "merge=true",
        options=(
            f"--dependency=afterany:{array_id}",
            "--cpus-per-task=1",
            "--time=10",
            f"--output={logs_dir}/merge-%j.out",
        ),
    )
    tasks = slurm_cluster.wait(array_id)
    logs = {i: (logs_dir / f"pipeline-shard-{array_id}_{i}.out").read_text() for i in (0, 1)}
    assert sorted((j.state, j.exit_code) for j in tasks) == [("COMPLETED", 0)] * 2, logs
    for index in (0, 1):
        assert f"array job {array_id}: worker {index} of 2" in logs[index]
    assert sum("shard: wrote" in log for log in logs.values()) == 1  # exactly one task merged

    single = json.loads((tiny_data.shards / "manifest.json").read_text())
    array = json.loads((output_dir / "manifest.json").read_text())
    assert array["totals"] == single["totals"] and array["totals"]["tokens"] > 0
    for split in ("train", "validation"):  # byte-identical shard files (their sha256s are in the index)
        assert array["splits"][split] == single["splits"][split]
    assert not (output_dir / "parts").exists()

    (merge,) = slurm_cluster.wait(merge_id)
    merge_log = (logs_dir / f"merge-{merge_id}.out").read_text()
    assert (merge.state, merge.exit_code) == ("COMPLETED", 0), merge_log
    assert "not an array job" in merge_log and "already complete" in merge_log


def test_array_must_start_at_zero(slurm_cluster, tiny_data):
    array_id = slurm_cluster.submit(
        "launch/slurm/shard_array.sbatch",
        *tiny_data.shard_args,
        f"output_dir={tiny_data.work / 'shards-bad-array'}",
        options=(
            "--array=1-2",
            "--cpus-per-task=1",
            "--time=5",
            f"--output={tiny_data.work}/logs/%x-%A_%a.out",
        ),
    )
    tasks = slurm_cluster.wait(array_id)
    assert [(j.state, j.exit_code) for j in tasks] == [("FAILED", 2)] * 2
    log = (tiny_data.work / "logs" / f"pipeline-shard-{array_id}_1.out").read_text()
    assert "submit with --array=0-1 (got tasks 1..2, 2 in all)" in log
