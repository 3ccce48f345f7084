"""`pipeline run`: the four stages wired together on a tiny config; a rerun skips completed stages."""

from __future__ import annotations

import json
import random

import pytest
from sklearn.metrics import accuracy_score

from pipeline.cli import main
from tests.helpers.corpus import synthetic_corpus
from tests.helpers.finetune import hf_logits, read_table
from tests.helpers.loop import reset_accelerate


def test_run_end_to_end_then_skip(tmp_path, capsys):
    corpus = synthetic_corpus(tmp_path / "corpus.txt", num_docs=300)
    rng = random.Random(0)
    rows = ["sentence\tlabel"] + [
        f"the {'cat' if (y := rng.randint(0, 1)) else 'dog'} sees a tree .\t{y}" for _ in range(80)
    ]
    (tmp_path / "sst.tsv").write_text("\n".join(rows) + "\n")
    args = [
        "run",
        f"output_dir={tmp_path / 'out'}",
        f"corpus=[{corpus}]",
        "tokenizer.vocab_size=200",
        "tokenizer.min_frequency=1",
        "shard.seq_len=64",
        "shard.val_fraction=0.1",
        "shard.num_proc=1",
        "shard.progress=false",
        "pretrain.model.preset=tiny",
        "pretrain.train.max_steps=4",
        "pretrain.train.batch_size=8",
        "pretrain.train.lr=1e-3",
        "pretrain.train.eval_every=2",
        "pretrain.train.progress=false",
        "pretrain.train.peak_tflops=1",
        "finetune.task.type=classification",
        f"finetune.data.train={tmp_path / 'sst.tsv'}",
        f"finetune.data.validation={tmp_path / 'sst.tsv'}",
        "finetune.train.max_steps=3",
        "finetune.train.batch_size=8",
        "finetune.train.lr=1e-3",
        "finetune.train.progress=false",
        "finetune.train.peak_tflops=1",
    ]
    reset_accelerate()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pipeline run summary" in out and "finetune eval/accuracy" in out and "pretrain eval loss" in out
    results = json.loads((tmp_path / "out" / "finetune" / "eval_results.json").read_text())
    # the exported model, run by transformers alone on the validation file, scores what the run reported
    (texts,), labels = read_table(tmp_path / "sst.tsv")
    predicted = hf_logits(tmp_path / "out" / "finetune" / "final", [texts]).argmax(-1)
    assert results["eval/accuracy"] == pytest.approx(
        accuracy_score([int(y) for y in labels], predicted), abs=1e-9
    )
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}

    reset_accelerate()
    assert main(args) == 0
    out = capsys.readouterr().out
    for stage in ("tokenizer", "shard", "pretrain", "finetune"):
        assert f"[run] {stage}: complete" in out
    changed = [
        p for p, t in mtimes.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != "config.yaml"
    ]
    assert changed == []


def test_run_checks_every_section_up_front(tmp_path, capsys):
    code = main(
        [
            "run",
            f"output_dir={tmp_path}",
            "corpus=[x.txt]",
            "tokenizer.vocab_size=100",
            "shard.seq_len=64",
            "shard.val_fraction=0.1",
            "pretrain.train.max_steps=1",
            "pretrain.train.batch_size=2",
            "pretrain.train.lr=1e-3",
            "pretrain.train.lrr=3",
            "finetune.task.type=classification",
        ]
    )
    assert code == 2
    assert (
        "unknown config key 'pretrain.train.lrr'. Did you mean 'pretrain.train.lr'" in capsys.readouterr().err
    )
    assert not (tmp_path / "tokenizer").exists()
