"""The shared loop on a toy regression task (single process, CPU, fp32): exact resume, accumulation
equivalence, schedules, checkpoint rotation/atomicity, logging outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.train import TrainConfig, export_model, lr_schedule, make_accelerator
from tests.helpers.loop import reset_accelerate, run, train_losses


def test_exact_resume_bit_identical(tmp_path):
    _, full_lines, full_w = run(tmp_path / "full", max_steps=8)
    first, _, _ = run(tmp_path / "half", max_steps=8, stop_after=4)
    assert not first["completed"] and first["steps"] == 4
    summary, half_lines, half_w = run(tmp_path / "half", max_steps=8, resume="auto")
    assert summary["steps_this_run"] == 4
    for key in full_w:
        assert torch.equal(full_w[key], half_w[key]), key
    assert train_losses(full_lines) == train_losses(half_lines)


def test_every_training_step_runs_in_training_mode(tmp_path, monkeypatch):
    """A model handed over in eval mode (what transformers' from_pretrained returns) trains with its
    dropout on from step 1, not only after the first evaluation."""
    from tests.helpers import loop as helpers

    modes = []
    build = helpers.toy_task

    def eval_mode_task(cfg, accelerator):
        task = build(cfg, accelerator)
        task.model.eval()
        original = task.model.forward

        def recording_forward(*args, **kwargs):
            if torch.is_grad_enabled():  # a training step (evaluation runs under no_grad)
                modes.append(task.model.training)
            return original(*args, **kwargs)

        task.model.forward = recording_forward
        return task

    monkeypatch.setattr(helpers, "toy_task", eval_mode_task)
    run(tmp_path, max_steps=6, eval_every=0, save_every=0)
    assert modes and all(modes), modes  # eval_every=0: no evaluation in between to switch it back


def test_grad_accum_equals_bigger_batch(tmp_path):
    """Micro-batches carry different target counts (tests/helpers/loop.py), so the gradient (its
    pre-clipping norm is logged) is only the same if the loss is normalised by the step's count."""
    _, lines_a, w_a = run(tmp_path / "a", batch_size=8, grad_accum=1, max_steps=4)
    _, lines_b, w_b = run(tmp_path / "b", batch_size=4, grad_accum=2, max_steps=4)
    for key in w_a:
        torch.testing.assert_close(w_a[key], w_b[key], rtol=1e-5, atol=1e-6)
    la, lb = train_losses(lines_a), train_losses(lines_b)
    assert la.keys() == lb.keys()
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)
    norms_a, norms_b = (
        {r["step"]: r["train/grad_norm"] for r in lines if "train/grad_norm" in r}
        for lines in (lines_a, lines_b)
    )
    assert norms_a.keys() == la.keys() and all(
        norms_b[s] == pytest.approx(norms_a[s], rel=1e-5) for s in norms_a
    )


def test_rotation_keeps_newest_complete(tmp_path):
    run(tmp_path, max_steps=12, save_every=2, keep_checkpoints=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_10", "step_12"]
    state = json.loads((tmp_path / "checkpoints" / "step_12" / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["files"]


def test_partial_and_corrupt_checkpoints_are_skipped(tmp_path):
    """A truncated file, a missing file and a half-written .partial: each reported by name and
    skipped; the run resumes from the newest complete checkpoint and ends bit-identical."""
    _, _, reference = run(tmp_path / "ref", max_steps=16, save_every=4)
    run(tmp_path / "run", max_steps=16, save_every=4, keep_checkpoints=3, stop_after=12)  # steps 4, 8, 12
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "step_16.partial").mkdir()  # a save killed midway: never a candidate
    weights = next((ckpts / "step_12").glob("model*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:10])  # truncated file in the newest one
    next((ckpts / "step_8").glob("optimizer*")).unlink()  # a missing file in the one before
    with pytest.warns(UserWarning) as warned:
        summary, _, resumed = run(tmp_path / "run", max_steps=16, save_every=4, keep_checkpoints=3)
    messages = [str(w.message) for w in warned]
    assert any(re.search(r"step_12: model\S*safetensors has 10 bytes, expected \d+", m) for m in messages), (
        messages
    )
    assert any(re.search(r"step_8 is missing optimizer", m) for m in messages), messages
    assert summary["steps_this_run"] == 12  # resumed from step_4
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_unreadable_checkpoint_falls_back_to_previous(tmp_path):
    run(tmp_path / "ref", max_steps=8, save_every=4)
    run(tmp_path / "run", max_steps=8, save_every=4)  # checkpoints at steps 4 and 8
    optimizer_file = next((tmp_path / "run" / "checkpoints" / "step_8").glob("optimizer*"))
    optimizer_file.write_bytes(b"\0" * optimizer_file.stat().st_size)  # same size, garbage content
    with pytest.warns(UserWarning, match="step_8 could not be loaded"):
        summary, _, weights = run(tmp_path / "run", max_steps=8, save_every=4)
    assert summary["steps_this_run"] == 4  # resumed from step_4 and redid 5..8
    _, _, reference = run(tmp_path / "ref", max_steps=8, resume="never")
    for key in weights:
        assert torch.equal(weights[key], reference[key]), key


def _garble(checkpoint) -> None:
    rng = next(checkpoint.glob("random_states_*.pkl"))
    rng.write_bytes(b"\1" * rng.stat().st_size)  # sizes match, content unreadable


def test_no_silent_restart_when_no_checkpoint_loads(tmp_path):
    """resume=auto with checkpoints none of which loads: an error naming each and how to start
    over on purpose - not a fresh run whose checkpoints would be rotated away by the old ones."""
    run(tmp_path, max_steps=8, save_every=4)  # steps 4 and 8
    ckpts = tmp_path / "checkpoints"
    for step in (4, 8):
        _garble(ckpts / f"step_{step}")
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.warns(UserWarning), pytest.raises(PipelineError) as error:
        run(tmp_path, max_steps=12, save_every=2)
    message = str(error.value)
    assert (
        "none of the 2 checkpoint(s)" in message
        and "train.resume=never" in message
        and "new output_dir" in message
    )
    assert re.search(r"step_8 could not be loaded \(.*random_states_0.pkl could not be read", message), (
        message
    )
    assert re.search(r"step_4 could not be loaded", message), message
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_4", "step_8"]  # untouched
    assert (tmp_path / "metrics.jsonl").read_text() == before  # no step was trained


def test_resume_never_replaces_a_later_run(tmp_path):
    """Starting over on purpose: the old run's later checkpoints go at this run's first save, so a
    crash afterwards resumes this run, not the abandoned one."""
    run(tmp_path, max_steps=12, save_every=4)  # steps 8 and 12 kept
    first, _, _ = run(tmp_path, max_steps=12, save_every=2, stop_after=2, resume="never")
    assert first["steps_this_run"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]
    summary, _, _ = run(tmp_path, max_steps=12, save_every=2)
    assert summary["steps_this_run"] == 10  # resumed this run's step 2


def test_logging_outputs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary, _, _ = run(tmp_path, max_steps=4, eval_every=2)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r for r in lines)
    evals = [r for r in lines if "eval/loss" in r]
    assert summary["last_eval"] == evals[-1] and summary["last_eval"]["step"] == 4  # the final one
    train = [r for r in lines if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in ("train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu"):
        assert key in train[0]
    assert [r["step"] for r in lines if "eval/loss" in r] == [2, 4]
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/mfu", "eval/loss"} <= tags
    assert (tmp_path / "config.yaml").exists() is False  # the stage (not fit) writes config.yaml


def test_loss_falls(tmp_path):
    _, lines, _ = run(tmp_path, max_steps=30, eval_every=0, save_every=0)
    losses = train_losses(lines)
    assert np.mean([losses[s] for s in range(26, 31)]) < 0.5 * np.mean([losses[s] for s in range(1, 6)])


@pytest.mark.parametrize("schedule", ["linear", "cosine", "wsd", "constant"])
def test_schedules(schedule):
    cfg = from_dict(
        TrainConfig,
        dict(max_steps=100, batch_size=1, lr=1.0, warmup_steps=10, schedule=schedule, decay_ratio=0.2),
    )
    lr = lr_schedule(cfg, 100)
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    expected_mid = {
        "linear": 1 - 45 / 90,
        "cosine": 0.5 * (1 + np.cos(np.pi * 45 / 90)),
        "wsd": 1.0,
        "constant": 1.0,
    }
    assert lr(55) == pytest.approx(expected_mid[schedule])
    expected_end = {"linear": 0.0, "cosine": 0.0, "wsd": 0.0, "constant": 1.0}
    assert lr(100) == pytest.approx(expected_end[schedule], abs=1e-9)
    if schedule == "wsd":
        assert lr(79) == 1.0 and lr(90) == pytest.approx(0.5)


def test_export_model_strips_wrapper_prefix(tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    reset_accelerate()
    cfg = from_dict(TrainConfig, dict(max_steps=1, batch_size=1, lr=1e-3))
    acc = make_accelerator(cfg, tmp_path, log=False)
    bert = BertModel(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    wrapper = torch.nn.ModuleDict({"inner": bert})
    export_model(acc, acc.prepare(wrapper), bert, tmp_path / "final", None)
    loaded = AutoModel.from_pretrained(tmp_path / "final")
    for (name, a), (_, b) in zip(bert.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert list((tmp_path / "final").glob("*.safetensors"))


def test_no_weight_decay_on_biases_and_norms():
    from transformers import BertConfig, BertForMaskedLM

    from pipeline.train import param_groups

    model = BertForMaskedLM(
        BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {
        "bert.embeddings.LayerNorm.weight",
        "cls.predictions.bias",
    }
    tied = model.bert.embeddings.word_embeddings.weight
    assert sum(p is tied for p in decay["params"]) == 1  # the tied decoder weight appears once
