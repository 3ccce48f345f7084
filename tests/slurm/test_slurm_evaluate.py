"""launch/slurm/evaluate_array.sbatch on a real (local) Slurm cluster: a 4-task array job fine-tunes
the 4 cells of the tiny suite (2 tasks x 2 seeds), a dependent job builds the table; each cell's
metrics are identical to the same cell run in this process.

Run: ``python -m pytest tests/slurm/test_slurm_evaluate.py -q`` (root; see conftest.py for the cluster).
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.evaluate import FAST, evaluate, write_suite

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SCRIPT = "launch/slurm/evaluate_array.sbatch"


def test_array_runs_one_cell_per_task_then_collects(slurm_cluster, tiny_data, tiny_pretrained):
    suite = write_suite(tiny_data.work / "suite")
    out, logs = tiny_data.work / "evaluate", tiny_data.work / "logs"
    args = ("--config", str(suite), f"model={tiny_pretrained}", f"output_dir={out}", *FAST)
    options = ("--cpus-per-task=1", "--time=15")
    array_id = slurm_cluster.submit(
        SCRIPT, *args, options=(*options, "--array=0-4", f"--output={logs}/%x-%A_%a.out")
    )
    collect_id = slurm_cluster.submit(
        SCRIPT,
        *args,
        "collect_only=true",
        options=(*options, f"--dependency=afterany:{array_id}", f"--output={logs}/collect-%j.out"),
    )
    tasks = {int(j.fields["ArrayTaskId"]): j for j in slurm_cluster.wait(array_id, timeout=900)}
    log = {i: (logs / f"pipeline-evaluate-{array_id}_{i}.out").read_text() for i in tasks}
    for index in range(4):
        assert (tasks[index].state, tasks[index].exit_code) == ("COMPLETED", 0), log[index]
        assert f"cell {index} of the array 0..4" in log[index]
    # task 4 is past the last cell: it fails at once, saying how many cells there are
    assert (tasks[4].state, tasks[4].exit_code) == ("FAILED", 2)
    assert "cell_index=4: there are 4 cells (a Slurm array runs them as --array=0-3)" in log[4]

    (collect,) = slurm_cluster.wait(collect_id)
    collect_log = (logs / f"collect-{collect_id}.out").read_text()
    assert (collect.state, collect.exit_code) == ("COMPLETED", 0), collect_log
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 4 and results["missing"] == []
    assert "average (cats, dogs)" in collect_log

    # the array's cell 0 is the same computation as cell 0 run here, to the last bit - on the job's
    # one thread (--cpus-per-task=1, OMP_NUM_THREADS=1): a matmul split over 2 threads may sum in
    # another order, and whether it does depends on the shapes (the tokenizer's vocabulary varies)
    local = tiny_data.work / "evaluate-local"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert evaluate(local, suite, tiny_pretrained, "cell_index=0") == 0
    finally:
        torch.set_num_threads(threads)
    (cell,) = [p.relative_to(local) for p in local.glob("cells/*/cats/seed0/eval_results.json")]
    assert json.loads((local / cell).read_text()) == json.loads((out / cell).read_text())
