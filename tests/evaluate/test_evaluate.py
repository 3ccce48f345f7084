"""`pipeline evaluate` end to end on a tiny suite (2 tasks x 2 seeds, tiny BERT, 12 steps a cell).

Every number of the table is recomputed here from the cells' own files (eval_results.json, the
training tables), independently of pipeline/evaluate/."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from pipeline.console import PipelineWarning
from tests.helpers.evaluate import TASKS, evaluate, write_suite

pytestmark = pytest.mark.slow
MODELS = ("pretrained-final", "none")


def eval_results(cell: Path) -> dict[str, float]:
    raw = json.loads((cell / "eval_results.json").read_text())
    return {k.removeprefix("eval/"): v for k, v in raw.items() if k.startswith("eval/")}


def cell_dir(out: Path, model: str, task: str, seed: int) -> Path:
    return out / "cells" / model / task / f"seed{seed}"


def score(metrics: dict, task: str) -> float:
    return statistics.mean(metrics[m] for m in TASKS[task][2])


@pytest.fixture(scope="module")
def model(tiny_pretrained, tmp_path_factory) -> Path:
    """The tiny pretrained model under a name that makes its tag 'pretrained-final'."""
    import shutil

    path = tmp_path_factory.mktemp("models") / "pretrained" / "final"
    shutil.copytree(tiny_pretrained, path)
    return path


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def evaluated(model, suite, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluated") / "out"
    assert evaluate(out, suite, model, "compare=[none]") == 0
    return out


def test_cells_and_table_match_the_cells_own_results(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    assert len(results["cells"]) == 8 and results["missing"] == []
    for record in results["cells"]:
        cell = cell_dir(evaluated, record["model"], record["task"], record["seed"])
        assert record["metrics"] == eval_results(cell)
        assert record["steps"] == 12 and record["seconds"] > 0
    for task in TASKS:
        row = results["summary"][task]
        for model in MODELS:
            scores = [score(eval_results(cell_dir(evaluated, model, task, s)), task) for s in (0, 1)]
            assert row["models"][model]["score"]["mean"] == pytest.approx(statistics.mean(scores))
            assert row["models"][model]["score"]["std"] == pytest.approx(statistics.stdev(scores))
            for metric in ("accuracy", "loss"):  # the loss differs from seed to seed even after 12 steps
                values = [eval_results(cell_dir(evaluated, model, task, s))[metric] for s in (0, 1)]
                stat = row["models"][model]["metrics"][metric]
                assert stat["mean"] == pytest.approx(statistics.mean(values))
                assert stat["std"] == pytest.approx(statistics.stdev(values))
            assert row["models"][model]["metrics"]["loss"]["std"] > 0
        ours = [score(eval_results(cell_dir(evaluated, MODELS[0], task, s)), task) for s in (0, 1)]
        theirs = [score(eval_results(cell_dir(evaluated, "none", task, s)), task) for s in (0, 1)]
        diff = row["differences"]["none"]
        assert diff["values"] == pytest.approx([a - b for a, b in zip(ours, theirs)])
        if len({round(a - b, 9) for a, b in zip(ours, theirs)}) > 1:
            assert diff["p_value"] == pytest.approx(scipy_stats.ttest_rel(ours, theirs).pvalue)
        assert diff["verdict"] == ("beyond seed noise" if diff["p_value"] < 0.05 else "within seed noise")
    average = results["summary"]["average"]["models"][MODELS[0]]["score"]["mean"]
    assert average == pytest.approx(
        statistics.mean(results["summary"][t]["models"][MODELS[0]]["score"]["mean"] for t in TASKS)
    )


def test_majority_baseline_is_the_hand_count(evaluated, suite):
    def labels(task: str, split: str) -> list[str]:
        lines = (suite.parent / f"{task}-{split}.tsv").read_text().splitlines()[1:]
        return [line.rsplit("\t", 1)[1] for line in lines]

    results = json.loads((evaluated / "results.json").read_text())
    for task in TASKS:
        top, _ = Counter(labels(task, "train")).most_common(1)[0]
        dev = labels(task, "dev")
        majority = results["summary"][task]["majority"]
        assert majority["prediction"] == f"label {top!r}"
        assert majority["metrics"]["accuracy"] == pytest.approx(dev.count(top) / len(dev))


def test_scratch_model_has_the_architecture_and_tokenizer_of_the_model(evaluated, model):
    from safetensors.torch import load_file

    ours = json.loads((model / "config.json").read_text())
    scratch = cell_dir(evaluated, "none", "cats", 0) / "final"
    theirs = json.loads((scratch / "config.json").read_text())
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        assert theirs[key] == ours[key], key
    assert (scratch / "tokenizer.json").read_text() == (model / "tokenizer.json").read_text()
    saved = (cell_dir(evaluated, "none", "cats", 0) / "config.yaml").read_text()
    assert "init_from: none" in saved and f"architecture_from: {model}" in saved
    # a random start: far from the pretrained weights, unlike the same cell fine-tuned from them
    pretrained = load_file(str(model / "model.safetensors"))
    from_scratch = load_file(str(scratch / "model.safetensors"))
    fine_tuned = load_file(str(cell_dir(evaluated, MODELS[0], "cats", 0) / "final" / "model.safetensors"))
    name = next(k for k in pretrained if k.endswith("word_embeddings.weight"))
    drift = (fine_tuned[name] - pretrained[name]).abs().mean()
    assert (from_scratch[name] - pretrained[name]).abs().mean() > 5 * drift


def test_outputs_and_printed_summary(evaluated):
    md = (evaluated / "results.md").read_text()
    results = json.loads((evaluated / "results.json").read_text())
    cats = results["summary"]["cats"]["models"][MODELS[0]]["score"]
    assert f"| cats | accuracy | {cats['mean']:.3f} ± {cats['std']:.3f} |" in md
    assert "| dogs | mean(f1, accuracy) |" in md and "| average (cats, dogs) |" in md
    assert (evaluated / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(evaluated / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "cats/pretrained-final/score",
        "dogs/none/score_by_seed",
        "average/pretrained-final-none/difference",
    } <= tags
    assert events.Scalars("cats/pretrained-final/score")[0].value == pytest.approx(cats["mean"], rel=1e-6)
    assert results["config"]["seeds"] == [0, 1] and results["config"]["compare"] == ["none"]
    assert results["provenance"]["git_commit"] and results["provenance"]["argv"]


def test_rerun_skips_complete_cells(evaluated, model, suite, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in evaluated.glob("cells/*/*/*/*") if p.is_file()}
    assert evaluate(evaluated, suite, model, "compare=[none]") == 0
    out = capsys.readouterr().out
    assert out.count("complete in") == 8 and "resumed from" not in out and "run summary" not in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no cell file was touched
    assert "| average (cats, dogs) |" in out or "average (cats, dogs)" in out


def test_changed_settings_are_refused_not_mixed_in(evaluated, model, suite, capsys):
    assert evaluate(evaluated, suite, model, "compare=[none]", "finetune.train.lr=1e-3") == 2
    err = capsys.readouterr().err
    assert "was trained with other settings (train.lr: 0.003 != 0.001)" in err


def test_array_cells_then_collect(model, suite, tmp_path, capsys):
    out = tmp_path / "out"
    for index in (0, 3):  # cats seed 0 and dogs seed 1 of the 4 cells
        assert evaluate(out, suite, model, f"cell_index={index}") == 0
    assert not (out / "results.json").exists()  # array tasks write no tables
    with pytest.warns(PipelineWarning, match="2 of 4 cells are missing from the table"):
        assert evaluate(out, suite, model, "collect_only=true") == 0
    results = json.loads((out / "results.json").read_text())
    assert [(c["task"], c["seed"]) for c in results["cells"]] == [("cats", 0), ("dogs", 1)]
    assert [m["index"] for m in results["missing"]] == [1, 2]
    assert "cell 1: pretrained-final / cats / seed 1" in (out / "results.md").read_text()
    capsys.readouterr()
    assert evaluate(out, suite, model, "cell_index=4") == 2
    assert (
        "cell_index=4: there are 4 cells (a Slurm array runs them as --array=0-3)" in capsys.readouterr().err
    )


def test_interrupted_cell_resumes_to_the_same_result(evaluated, model, suite, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("tasks=[cats]", "seeds=[0]", "finetune.train.save_every=4")
    assert evaluate(out, suite, model, *args, "finetune.train.stop_after=6") == 75
    first = json.loads((cell_dir(out, MODELS[0], "cats", 0) / "evaluate_cell.json").read_text())["seconds"]
    capsys.readouterr()
    assert evaluate(out, suite, model, *args) == 0
    assert "resumed from" in capsys.readouterr().out
    cell = cell_dir(out, MODELS[0], "cats", 0)
    assert eval_results(cell) == eval_results(cell_dir(evaluated, MODELS[0], "cats", 0))  # bit-identical
    record = json.loads((out / "results.json").read_text())["cells"][0]
    assert record["seconds"] > first and record["steps"] == 12
    assert not (cell / "checkpoints").exists()  # removed once the cell is complete


def test_ner_and_regression_tasks_by_path(model, suite, tmp_path):
    import random

    import yaml

    from tests.helpers.finetune import sentence

    rng = random.Random(0)
    rows = ["a\tb\tscore"]
    for _ in range(80):
        k = rng.randint(0, 3)
        rows.append(f"{sentence(rng)}\t{'apple ' * k}tree\t{k}")
    (tmp_path / "reg.tsv").write_text("\n".join(rows) + "\n")
    ner = tmp_path / "ner.txt"
    ner.write_text(
        "".join(f"alice B-PER\n{w} O\nthe O\nparis B-LOC\n\n" for w in ("sees", "likes", "finds") * 20)
    )
    common = {
        "model": {"init_from": "x"},
        "output_dir": "x",
        "train": {"max_steps": 1, "batch_size": 8, "lr": 1e-3},
    }
    configs = {
        "reg": {
            "task": {"type": "regression"},
            "data": {
                "train": str(tmp_path / "reg.tsv"),
                "validation": str(tmp_path / "reg.tsv"),
                "text_columns": ["a", "b"],
                "label_column": "score",
            },
        },
        "ner": {"task": {"type": "ner"}, "data": {"train": str(ner), "validation": str(ner)}},
    }
    for name, config in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**common, **config}))
    out = tmp_path / "out"
    tasks = f"tasks=[{tmp_path / 'reg.yaml'},{tmp_path / 'ner.yaml'}]"
    assert evaluate(out, suite, model, tasks, "seeds=[0]") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["reg"]["score_metrics"] == ["pearson"] and results["tasks"]["ner"][
        "score_metrics"
    ] == ["f1"]
    labels = [float(line.rsplit("\t", 1)[1]) for line in rows[1:]]
    mean = statistics.mean(labels)
    assert results["summary"]["reg"]["majority"]["metrics"]["mse"] == pytest.approx(
        statistics.mean((y - mean) ** 2 for y in labels)
    )
    assert results["summary"]["ner"]["majority"]["prediction"] == "tag 'O' everywhere"
    assert results["summary"]["ner"]["majority"]["metrics"]["f1"] == 0.0
    for task in ("reg", "ner"):
        record = next(c for c in results["cells"] if c["task"] == task)
        assert record["metrics"] == eval_results(cell_dir(out, MODELS[0], task, 0))
