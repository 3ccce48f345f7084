"""The pretraining data path at 10^10 sequences stays bounded: ``bench/data_scale.py`` on a simulated
set (real manifest, index and tokenizer; 4,769 sparse shard files of 2^21 sequences), run as the
benchmark runs it - open the set, plan for 8 processes, seek to optimizer step 10^8, read a batch.

The bounds are loose on purpose (a loaded CI machine must pass them) but far below what an O(N)
step would cost: the materialised permutation of 10^10 samples alone is 80 GB.  Run:
``python -m pytest tests/test_data_scale.py -q`` (about 10 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.shards import small_wordpiece

REPO = Path(__file__).resolve().parents[1]


def test_ten_billion_sequences_open_seek_and_read_in_bounded_time_and_memory(tmp_path):
    env = {**os.environ, "PIPELINE_BENCH_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "bench.data_scale", "--sequences", str(10**10), "--shard-size", str(2**21)]
    argv += ["--tokenizer", str(small_wordpiece(tmp_path / "tok")), "--work-dir", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "data_scale.json").read_text())
    assert result["command"].startswith("python -m bench.data_scale") and result["git"]["commit"]
    (row,) = result["rows"]
    assert row["sequences"] == 10**10 and row["shard_files"] == 4769 and row["step"] == 10**8
    assert row["batch_shape"] == [32, 128] and row["distinct_samples"] == 32
    assert row["open_maps"] <= 32  # only the files the batch touched
    assert row["open_s"] < 2 and row["seek_s"] < 2 and row["read_s"] < 2
    assert row["rss_growth_mb"] < 64
    assert not list(tmp_path.glob("bench-scale-*"))  # the sparse set is cleaned up
