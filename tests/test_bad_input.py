"""Bad input, table-driven: each case must give ONE clear `error:` line naming the file/line/key,
exit code 2, and leave nothing half-written in the output directory.

To add a case: write a function ``case(tmp, ctx) -> (argv, expected_regex)`` and list it in CASES.
``ctx`` has ``shards`` (a valid tiny shard set), ``model`` (a valid tiny pretrained model dir) and
``tsv`` (a valid classification file).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.helpers import ROOT
from tests.helpers.evaluate import write_suite
from tests.helpers.faults import mode_bits_apply, read_only_dir
from tests.helpers.finetune import write_sentiment
from tests.helpers.loop import reset_accelerate

PRETRAIN = ["train.max_steps=1", "train.batch_size=2", "train.lr=1e-3", "train.progress=false"]


def finetune(tmp, ctx, train, validation, *extra):
    return [
        "finetune",
        f"output_dir={tmp / 'out'}",
        "task.type=classification",
        f"data.train={train}",
        f"data.validation={validation}",
        f"model.init_from={ctx['model']}",
        *PRETRAIN,
        *extra,
    ]


def tokenizer_on(tmp, corpus, *extra):
    return ["tokenizer", f"input=[{corpus}]", f"output_dir={tmp / 'out'}", "vocab_size=100", *extra]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def empty_corpus(tmp, ctx):
    return tokenizer_on(tmp, write(tmp / "empty.txt", "")), r"empty.*empty.txt"


def missing_corpus(tmp, ctx):
    return tokenizer_on(tmp, tmp / "nope.txt"), r"nope.txt"


def non_utf8_corpus(tmp, ctx):
    return tokenizer_on(tmp, write(tmp / "bin.txt", b"fine line\n\xff\xfe\x00 junk\n")), r"bin.txt:2"


def huge_line_corpus(tmp, ctx):
    return tokenizer_on(tmp, write(tmp / "big.txt", "ok\n" + "a" * (10 * 2**20) + "\n")), r"big.txt:2"


def shard_seq_len_too_long(tmp, ctx):
    corpus = write(tmp / "c.txt", "hello world\n" * 10)
    return [
        "shard",
        f"input=[{corpus}]",
        f"tokenizer={ctx['shards'] / 'tokenizer'}",
        f"output_dir={tmp / 'out'}",
        "seq_len=100000",
        "val_fraction=0.1",
    ], r"seq_len"


def vocab_mismatch(tmp, ctx):
    broken = tmp / "shards"
    shutil.copytree(ctx["shards"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["tokenizer"]["vocab_size"] += 5
    (broken / "manifest.json").write_text(json.dumps(manifest))
    return [
        "pretrain",
        f"data.shards={broken}",
        f"output_dir={tmp / 'out'}",
        *PRETRAIN,
    ], r"vocab size mismatch"


def seq_len_beyond_positions(tmp, ctx):
    return (
        [
            "pretrain",
            f"data.shards={ctx['shards']}",
            f"output_dir={tmp / 'out'}",
            *PRETRAIN,
            "model.max_position_embeddings=16",
        ],
        r"sequence length 64 exceeds model.max_position_embeddings=16",
    )


def unknown_key(tmp, ctx):
    return (
        ["pretrain", f"data.shards={ctx['shards']}", f"output_dir={tmp / 'out'}", *PRETRAIN, "train.lrr=1"],
        r"unknown config key 'train.lrr'. Did you mean 'train.lr'",
    )


def wrong_type(tmp, ctx):
    return (
        [
            "pretrain",
            f"data.shards={ctx['shards']}",
            f"output_dir={tmp / 'out'}",
            *PRETRAIN,
            "train.batch_size=big",
        ],
        r"train.batch_size: expected int",
    )


def malformed_yaml(tmp, ctx):
    cfg = write(tmp / "bad.yaml", "train:\n  lr: [1,\n  max_steps: 3\n")
    return ["pretrain", "--config", str(cfg)], r"malformed YAML in .*bad.yaml line \d+"


def missing_label(tmp, ctx):
    bad = write(tmp / "bad.tsv", "sentence\tlabel\nthe cat .\t1\nthe dog .\t\n")
    return finetune(tmp, ctx, bad, ctx["tsv"]), r"bad.tsv:3"


def unseen_label(tmp, ctx):
    dev = write(tmp / "dev.tsv", "sentence\tlabel\nthe cat .\t1\nthe dog .\t7\n")
    return finetune(tmp, ctx, ctx["tsv"], dev), r"dev.tsv:3.*7"


def wrong_column_count(tmp, ctx):
    bad = write(tmp / "cols.tsv", "sentence\tlabel\nthe cat .\t1\textra\n")
    return finetune(tmp, ctx, bad, ctx["tsv"]), r"cols.tsv:2"


def empty_validation(tmp, ctx):
    dev = write(tmp / "dev.tsv", "sentence\tlabel\n")
    return finetune(tmp, ctx, ctx["tsv"], dev), r"dev.tsv"


def conll_missing_tag(tmp, ctx):
    bad = write(tmp / "ner.txt", "alice B-PER\nsees O\n\nbob\nruns O\n")
    return (
        [
            "finetune",
            f"output_dir={tmp / 'out'}",
            "task.type=ner",
            f"data.train={bad}",
            f"data.validation={bad}",
            f"model.init_from={ctx['model']}",
            *PRETRAIN,
        ],
        r"ner.txt:4",
    )


def init_from_not_a_model(tmp, ctx):
    return finetune(tmp, ctx, ctx["tsv"], ctx["tsv"], f"model.init_from={tmp}"), r"is not a model directory"


def evaluate_on(tmp, ctx, *extra, model=None):
    suite = write_suite(tmp / "suite")
    return [
        "evaluate",
        "--config",
        str(suite),
        f"model={model or ctx['model']}",
        f"output_dir={tmp / 'out'}",
        *extra,
    ]


def evaluate_unknown_task(tmp, ctx):
    return evaluate_on(tmp, ctx, "tasks=[cats,catz]"), r"tasks: unknown task 'catz'.*Did you mean 'cats'"


def evaluate_task_data_missing(tmp, ctx):
    task = write(
        tmp / "gone.yaml",
        f"task: {{type: classification}}\ndata: {{train: {tmp / 'nope.tsv'}, validation: {ctx['tsv']}}}\n"
        "train: {max_steps: 2, batch_size: 8, lr: 1.0e-3}\n",
    )
    return evaluate_on(
        tmp, ctx, f"tasks=[cats,{task}]"
    ), r"task 'gone' \(.*gone.yaml\): data file not found: .*nope.tsv"


def evaluate_model_without_tokenizer(tmp, ctx):
    model = tmp / "model"
    shutil.copytree(ctx["model"], model)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model / name).unlink(missing_ok=True)
    return evaluate_on(tmp, ctx, model=model), r"model=.*model has no tokenizer"


def evaluate_model_without_config(tmp, ctx):
    model = tmp / "model"
    shutil.copytree(ctx["model"], model)
    (model / "config.json").unlink()
    return evaluate_on(
        tmp, ctx, "compare=[none]", model=model
    ), r"model=.*model is not a model directory \(no config.json\)"


def evaluate_metric_not_produced(tmp, ctx):
    return (
        evaluate_on(tmp, ctx, "suite.dogs.metrics=[f1,bleu]"),
        r"task 'dogs': metric\(s\) \['bleu'\] are not produced by this classification task; it reports accuracy, f1,",
    )


CASES = [
    empty_corpus,
    missing_corpus,
    non_utf8_corpus,
    huge_line_corpus,
    shard_seq_len_too_long,
    vocab_mismatch,
    seq_len_beyond_positions,
    unknown_key,
    wrong_type,
    malformed_yaml,
    missing_label,
    unseen_label,
    wrong_column_count,
    empty_validation,
    conll_missing_tag,
    init_from_not_a_model,
    evaluate_unknown_task,
    evaluate_task_data_missing,
    evaluate_model_without_tokenizer,
    evaluate_model_without_config,
    evaluate_metric_not_produced,
]


@pytest.fixture(scope="module")
def ctx(tiny_shards, tiny_pretrained, tmp_path_factory):
    tsv = write_sentiment(tmp_path_factory.mktemp("tsv") / "ok.tsv", 20, 0)
    return {"shards": tiny_shards, "model": tiny_pretrained, "tsv": tsv}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(case, ctx, tmp_path, capsys):
    argv, expected = case(tmp_path, ctx)
    reset_accelerate()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(expected, err[0]), err[0]
    out = tmp_path / "out"
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    assert [p.name for p in leftovers if p.name != "config.yaml"] == []


def test_unwritable_output_dir_is_refused(ctx, capsys):
    """A real permission error: output_dir is a directory with mode 0500 (as root, which ignores
    mode bits, the call runs with nobody's rights). One error line, exit 2, nothing written."""
    with read_only_dir() as locked:
        reset_accelerate()
        with mode_bits_apply():
            code = main(["pretrain", f"data.shards={ctx['shards']}", f"output_dir={locked}", *PRETRAIN])
        assert list(locked.iterdir()) == []
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"error: output_dir {locked} is not writable: Permission denied", err[0]
    ), err


def test_gpu_launch_config_without_gpu(ctx, tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "launch/accelerate/single_gpu.yaml",
        "-m",
        "pipeline",
        "pretrain",
        f"data.shards={ctx['shards']}",
        f"output_dir={tmp_path / 'out'}",
        *PRETRAIN,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert "asks for a GPU (use_cpu: false) but this machine has no CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()
