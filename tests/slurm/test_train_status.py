"""launch/slurm/train_status.py: config resolution and run-outcome detection used by train.sbatch.

Run: ``python -m pytest tests/slurm/test_train_status.py -q`` (no Slurm needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from launch.slurm.train_status import main, run_outcome, summary_stamp

ROOT = Path(__file__).resolve().parents[2]


def test_output_dir_resolves_yaml_and_overrides(capsys):
    assert main(["output-dir", "pretrain", "--config", "configs/pretrain/tiny_cpu.yaml"]) == 0
    assert capsys.readouterr().out.strip() == "runs/pretrain-tiny"
    args = [
        "output-dir",
        "pretrain",
        "--config",
        "configs/pretrain/tiny_cpu.yaml",
        "output_dir=/x/y",
        "train.resume=auto",
    ]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == "/x/y"


def test_bad_config_is_one_error_line(capsys):
    args = ["output-dir", "pretrain", "--config", "configs/pretrain/tiny_cpu.yaml", "train.lrr=1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.lrr" in err and "\n" not in err


def test_outcome_needs_a_summary_written_after_the_stamp(tmp_path):
    stamp = summary_stamp(tmp_path)
    assert stamp == "none" and run_outcome(tmp_path, stamp) == "unknown"
    (tmp_path / "summary.json.tmp").write_text(json.dumps({"completed": False}))
    os.replace(tmp_path / "summary.json.tmp", tmp_path / "summary.json")  # as the stage writes it
    assert run_outcome(tmp_path, stamp) == "checkpointed"
    stamp = summary_stamp(tmp_path)
    assert run_outcome(tmp_path, stamp) == "unknown"  # the same file again: an earlier invocation's
    (tmp_path / "summary.json.tmp").write_text(json.dumps({"completed": True, "steps": 6}))
    os.replace(tmp_path / "summary.json.tmp", tmp_path / "summary.json")
    assert run_outcome(tmp_path, stamp) == "completed"
    (tmp_path / "summary.json").write_text("{not json")
    assert run_outcome(tmp_path, "none") == "unknown"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in (ROOT / "launch" / "slurm").glob("*.sbatch"))
    scripts += sorted(str(p) for p in (ROOT / "tests" / "slurm" / "cluster").glob("*.sh"))
    result = subprocess.run(["shellcheck", "--shell=bash", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_only_training_stages():
    with pytest.raises(SystemExit, match="not a training stage"):
        main(
            [
                "output-dir",
                "shard",
                "input=[a.txt]",
                "tokenizer=t",
                "output_dir=o",
                "seq_len=64",
                "val_fraction=0",
            ]
        )
