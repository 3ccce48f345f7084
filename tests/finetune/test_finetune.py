"""`pipeline finetune` end to end on tiny models: every task type, outputs, exported heads, errors."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from pipeline.cli import main
from tests.helpers.finetune import (
    finetune,
    hf_logits,
    read_table,
    results,
    sentence,
    write_conll,
    write_sentiment,
)
from tests.helpers.loop import reset_accelerate


def test_classification_learns_and_writes_outputs(tiny_pretrained, tmp_path):
    train, dev = (
        write_sentiment(tmp_path / "train.tsv", 400, 0),
        write_sentiment(tmp_path / "dev.tsv", 100, 1),
    )
    test = write_sentiment(tmp_path / "test.tsv", 20, 2)
    out = tmp_path / "run"
    assert (
        finetune(
            out,
            "task.type=classification",
            f"data.train={train}",
            f"data.validation={dev}",
            f"data.test={test}",
            f"model.init_from={tiny_pretrained}",
            "train.max_steps=60",
            "train.eval_every=20",
        )
        == 0
    )
    res = results(out)
    assert res["eval/accuracy"] > 0.9 and {"eval/f1", "eval/f1_macro", "eval/mcc", "eval/loss"} <= res.keys()
    # the exported model, run by transformers alone, reproduces the reported metrics and predictions
    (texts,), labels = read_table(dev)
    gold, predicted = [int(y) for y in labels], hf_logits(out / "final", [texts]).argmax(-1)
    assert res["eval/accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-9)
    assert res["eval/f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-9)
    assert res["eval/mcc"] == pytest.approx(matthews_corrcoef(gold, predicted), abs=1e-9)
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\ttext\ttext_pair\tprediction" and len(lines) == 21
    (test_texts,), _ = read_table(test)
    expected = [str(y) for y in hf_logits(out / "final", [test_texts]).argmax(-1)]
    assert [line.split("\t")[1] for line in lines[1:]] == test_texts
    assert [line.split("\t")[-1] for line in lines[1:]] == expected
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.id2label == {0: "0", 1: "1"}
    logits = model(**tok(["the cat park tree ."], return_tensors="pt")).logits
    assert logits.argmax(-1).item() == 1


def test_pairs_regression_and_from_scratch(tiny_pretrained, tmp_path):
    rng = random.Random(3)
    rows = ["a,b,score"]
    for _ in range(200):
        k = rng.randint(0, 3)
        rows.append(f"{sentence(rng)},{' '.join(['apple'] * k) or 'none'} tree,{float(k)}")
    data = tmp_path / "pairs.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "reg"
    assert (
        finetune(
            out,
            "task.type=regression",
            f"data.train={data}",
            f"data.validation={data}",
            "data.text_columns=[a,b]",
            "data.label_column=score",
            f"model.init_from={tiny_pretrained}",
            "train.max_steps=40",
            "train.eval_every=20",
        )
        == 0
    )
    res = results(out)
    assert {"eval/pearson", "eval/spearman", "eval/mse"} <= res.keys() and res["eval/pearson"] > 0.5
    _assert_regression_metrics_reproduced(out, data)

    scratch = tmp_path / "scratch"
    assert (
        finetune(
            scratch,
            "task.type=regression",
            f"data.train={data}",
            f"data.validation={data}",
            "data.text_columns=[a,b]",
            "data.label_column=score",
            "model.init_from=none",
            "model.preset=tiny",
            f"model.tokenizer={tiny_pretrained}",
            "train.max_steps=2",
        )
        == 0
    )
    _assert_regression_metrics_reproduced(scratch, data)


def _assert_regression_metrics_reproduced(out: Path, data: Path) -> None:
    """The exported regressor, run by transformers alone, gives the run's reported MSE / Pearson."""
    (a, b), labels = read_table(data, ("a", "b"), "score")
    predicted, gold = hf_logits(out / "final", [a, b])[:, 0], np.array([float(y) for y in labels])
    res = results(out)
    assert res["eval/mse"] == pytest.approx(float(np.mean((predicted - gold) ** 2)), rel=1e-4)
    assert res["eval/pearson"] == pytest.approx(stats.pearsonr(predicted, gold).statistic, abs=1e-4)


def test_ner_iob1_and_iob2_train_identically(tiny_pretrained, tmp_path):
    outs = {}
    for scheme in ("iob1", "iob2"):
        data = write_conll(tmp_path / f"{scheme}.txt", scheme)
        outs[scheme] = tmp_path / scheme
        assert (
            finetune(
                outs[scheme],
                "task.type=ner",
                f"data.train={data}",
                f"data.validation={data}",
                f"data.test={data}",
                f"model.init_from={tiny_pretrained}",
                "train.max_steps=40",
                "train.eval_every=20",
                "data.group_by_length=true",  # NER windows are batched by length too
            )
            == 0
        )
    r1, r2 = results(outs["iob1"]), results(outs["iob2"])
    assert r1 == r2 and r1["eval/f1"] > 0.5 and "eval/PER/f1" in r1 and "eval/LOC/f1" in r1
    pred_lines = [
        line.split() for line in (outs["iob2"] / "predictions.tsv").read_text().splitlines() if line
    ]
    gold_lines = [line.split() for line in (tmp_path / "iob2.txt").read_text().splitlines()[2:] if line]
    assert [p[0] for p in pred_lines] == [g[0] for g in gold_lines]  # every token, in order
    assert {p[-1] for p in pred_lines} <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(outs["iob2"] / "final")
    assert set(model.config.label2id) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}


def test_resume_gives_identical_weights(tiny_pretrained, tmp_path):
    """Also with length-grouped batches, which must change which examples each step sees."""
    from safetensors.torch import load_file

    train = write_sentiment(tmp_path / "train.tsv", 200, 0)
    common = [
        "task.type=classification",
        f"data.train={train}",
        f"data.validation={train}",
        f"model.init_from={tiny_pretrained}",
        "train.max_steps=8",
        "train.save_every=4",
        "train.eval_every=8",
        "train.metric_for_best=eval/loss",
        "train.greater_is_better=false",
    ]
    weights = {}
    for grouped in ("false", "true"):
        args = [*common, f"data.group_by_length={grouped}"]
        a, b = tmp_path / f"a-{grouped}", tmp_path / f"b-{grouped}"
        assert finetune(a, *args) == 0
        assert finetune(b, *args, "train.stop_after=4") == 75
        assert finetune(b, *args) == 0
        assert json.loads((b / "summary.json").read_text())["steps_this_run"] == 4  # resumed, not restarted
        wa, wb = (load_file(run / "final" / "model.safetensors") for run in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        weights[grouped] = wa
    assert not all(torch.equal(weights["true"][k], weights["false"][k]) for k in weights["true"])


def test_errors_are_clear(tiny_pretrained, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nthe cat .\t1\nthe dog .\n")
    assert (
        finetune(
            tmp_path / "o1",
            "task.type=classification",
            f"data.train={bad}",
            f"data.validation={bad}",
            f"model.init_from={tiny_pretrained}",
            "train.max_steps=1",
        )
        == 2
    )
    assert f"{bad}:3" in capsys.readouterr().err
    good = write_sentiment(tmp_path / "good.tsv", 20, 0)
    assert (
        finetune(
            tmp_path / "o2",
            "task.type=classification",
            f"data.train={good}",
            f"data.validation={good}",
            f"model.init_from={tmp_path}",
            "train.max_steps=1",
        )
        == 2
    )
    assert "is not a model directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "cola", "mrpc", "rte"])
def test_glue_configs_run(task, shared_data, tiny_pretrained, tmp_path):
    """The shipped configs read the real, messy GLUE files (data paths redirected to shared_data)."""
    import yaml

    cfg = yaml.safe_load(Path(f"configs/finetune/{task}.yaml").read_text())
    paths = [
        f"data.{split}={cfg['data'][split].replace('../shared/data', str(shared_data))}"
        for split in ("train", "validation", "test")
    ]
    reset_accelerate()
    assert (
        main(
            [
                "finetune",
                "--config",
                f"configs/finetune/{task}.yaml",
                *paths,
                f"output_dir={tmp_path}",
                f"model.init_from={tiny_pretrained}",
                "train.max_steps=3",
                "train.epochs=0",
                "train.progress=false",
                "train.save_every=0",
                "train.peak_tflops=1",
            ]
        )
        == 0
    )
    res = results(tmp_path)
    assert 0.0 < res["eval/loss"] < 5.0 and math.isfinite(res[cfg["train"]["metric_for_best"]])
    # one prediction per test example, in file order, each a label seen in training
    test_file = Path(paths[2].split("=", 1)[1])
    with open(test_file, encoding="utf-8") as f:
        ids = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
    predictions = [line.split("\t") for line in (tmp_path / "predictions.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in predictions] == ids
    assert {row[-1] for row in predictions} <= set(
        json.loads((tmp_path / "final" / "config.json").read_text())["label2id"]
    )


def test_finetune_dropout_is_set_on_the_pretrained_model(tiny_pretrained):
    """Pretraining runs without dropout (its default); fine-tuning turns model.dropout back on."""
    from pipeline.config import from_dict
    from pipeline.finetune import FinetuneModelConfig, build_model, load_tokenizer

    saved = json.loads((tiny_pretrained / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.0
    for rate in (0.1, 0.0):
        cfg = from_dict(FinetuneModelConfig, {"init_from": str(tiny_pretrained), "dropout": rate})
        model = build_model(cfg, "classification", ["a", "b"], load_tokenizer(cfg))
        assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == rate
        assert {m.p for m in model.bert.modules() if isinstance(m, torch.nn.Dropout)} == {rate}
