"""Packed fine-tuning batches (``data.packing``): the layout, and the same loss and gradients as the
padded batch for BERT and ModernBERT (CLS and mean pooling, token classification, sdpa and eager).

Tolerances: packed and padded rows compute the same sums in another order and with other shapes, so
fp32 results agree to rounding: loss within 1e-5 relative, every gradient within 1e-4 of its
largest entry.  Attention *key* biases are the exception: softmax ignores a constant added to all
of a row's scores, so their exact gradient is zero and both sides hold only rounding noise; they
are checked to be negligible against the query-bias gradient of the same layer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    ModernBertConfig,
)

from pipeline.finetune import build
from pipeline.finetune.features import collate_dynamic
from pipeline.finetune.model import FinetuneModel
from pipeline.finetune.packing import can_pack, collate_packed, pack_rows
from pipeline.mlm import PAD_SEGMENT
from pipeline.train import IGNORE_INDEX
from tests.helpers.finetune import finetune, write_sentiment

PAD = 0


def _features(n: int, *, ner: bool, types: bool, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(3, 30))
        item = {
            "input_ids": [2, *rng.integers(5, 100, length - 2).tolist(), 3],
            "attention_mask": [1] * length,
        }
        if types:
            item["token_type_ids"] = [0] * (length // 2) + [1] * (length - length // 2)
        item["labels"] = rng.integers(0, 3, length).tolist() if ner else int(rng.integers(0, 3))
        if ner:
            item["labels"][0] = item["labels"][-1] = IGNORE_INDEX
        out.append(item)
    return out


def test_pack_rows_places_every_item_once_within_capacity():
    lengths = [30, 5, 17, 40, 3, 3, 22, 9, 40]
    rows, starts, num_rows = pack_rows(lengths, 40)
    used = np.zeros((num_rows, 40), dtype=int)
    for row, start, n in zip(rows, starts, lengths):
        assert start + n <= 40
        used[row, start : start + n] += 1
    assert used.max() == 1 and used.sum() == sum(lengths)
    assert num_rows == 5  # first-fit decreasing: 40 | 40 | 30+9 | 22+17 | 5+3+3
    assert (pack_rows(lengths, 40)[0] == rows).all()  # deterministic


@pytest.mark.parametrize("ner", [False, True])
def test_collate_packed_keeps_every_example_intact(ner):
    features = _features(7, ner=ner, types=True)
    batch = collate_packed(features, PAD, row_length=40)
    width = batch["input_ids"].shape[1]
    assert width <= 40 and batch["input_ids"].shape == batch["segment_ids"].shape
    for index, item in enumerate(features):
        row, start = divmod(int(batch["example_starts"][index]), width)
        n = len(item["input_ids"])
        span = slice(start, start + n)
        assert batch["input_ids"][row, span].tolist() == item["input_ids"]
        assert batch["token_type_ids"][row, span].tolist() == item["token_type_ids"]
        assert batch["position_ids"][row, span].tolist() == list(range(n))
        assert (batch["segment_ids"][row, span] == index).all()
        if ner:
            assert batch["labels"][row, span].tolist() == item["labels"]
    real = sum(len(f["input_ids"]) for f in features)
    assert int((batch["segment_ids"] != PAD_SEGMENT).sum()) == real
    assert (batch["input_ids"][batch["segment_ids"] == PAD_SEGMENT] == PAD).all()
    if ner:
        assert (batch["labels"][batch["segment_ids"] == PAD_SEGMENT] == IGNORE_INDEX).all()
    else:
        assert batch["labels"].tolist() == [f["labels"] for f in features]


def _model(arch: str, attention: str, ner: bool, pooling: str = "cls") -> FinetuneModel:
    common = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        pad_token_id=PAD,
        attn_implementation=attention,
    )
    if arch == "bert":
        config = BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
    else:  # a window of 8 < the sentences: the sliding layers' band is exercised
        config = ModernBertConfig(
            classifier_pooling=pooling,
            local_attention=8,
            global_attn_every_n_layers=2,
            bos_token_id=2,
            eos_token_id=3,
            cls_token_id=2,
            sep_token_id=3,
            **common,
        )
    torch.manual_seed(0)
    head = AutoModelForTokenClassification if ner else AutoModelForSequenceClassification
    model = FinetuneModel(head.from_config(config), "ner" if ner else "classification")
    assert can_pack(model.model)
    return model.train()


def _loss_and_grads(model: FinetuneModel, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch)["loss_sum"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


CASES = [
    (arch, attention, ner, pooling)
    for arch in ("bert", "modernbert")
    for attention in ("sdpa", "eager")
    for ner in (False, True)
    for pooling in (["cls", "mean"] if arch == "modernbert" and not ner else ["cls"])
]


@pytest.mark.parametrize(("arch", "attention", "ner", "pooling"), CASES)
def test_packed_batch_gives_the_padded_loss_and_gradients(arch, attention, ner, pooling):
    model = _model(arch, attention, ner, pooling)
    features = _features(9, ner=ner, types=arch == "bert")
    padded_loss, padded = _loss_and_grads(model, collate_dynamic(features, PAD))
    packed_batch = collate_packed(features, PAD, row_length=40)
    assert packed_batch["input_ids"].numel() < collate_dynamic(features, PAD)["input_ids"].numel()
    packed_loss, packed = _loss_and_grads(model, packed_batch)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed.keys() == padded.keys()
    for name, grad in padded.items():
        if name.endswith("attention.self.key.bias"):
            query = padded[name.replace(".key.", ".query.")]
            assert packed[name].abs().max() < 1e-4 * query.abs().max(), name
            continue
        assert (packed[name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-12, name


def test_finetune_stage_packs_by_default_and_trains_like_padding(tiny_pretrained, tmp_path, monkeypatch):
    packed_batches = []

    def spy(features, *args):
        packed_batches.append(len(features))
        return collate_packed(features, *args)

    monkeypatch.setattr(build, "collate_packed", spy)
    train = write_sentiment(tmp_path / "train.tsv", 96, seed=0)
    dev = write_sentiment(tmp_path / "dev.tsv", 32, seed=1)
    common = [
        f"data.train={train}",
        f"data.validation={dev}",
        f"model.init_from={tiny_pretrained}",
        "task.type=classification",
        "model.dropout=0",
        "train.max_steps=6",
        "train.log_every=1",
        "train.eval_every=0",
    ]
    assert finetune(tmp_path / "packed", *common) == 0
    assert len(packed_batches) >= 6 and set(packed_batches) == {16}  # every training micro-batch
    calls = len(packed_batches)
    assert finetune(tmp_path / "padded", *common, "data.packing=false") == 0
    assert len(packed_batches) == calls

    def losses(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r]

    packed, padded = losses(tmp_path / "packed"), losses(tmp_path / "padded")
    assert len(packed) == 6 and packed == pytest.approx(padded, rel=1e-4)
