"""Layer-wise learning-rate decay (train.layer_lr_decay): which lr each parameter really gets."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, ModernBertConfig, ModernBertForMaskedLM

from pipeline.config import ConfigError
from pipeline.train import TrainConfig, build_optimizer
from pipeline.train.optim import set_lr


def _bert(layers: int = 3) -> torch.nn.Module:
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32
    )
    return BertForSequenceClassification(config)


def _lr_of(model: torch.nn.Module, decay: float, lr: float = 1e-3) -> dict[str, float]:
    optimizer = build_optimizer(model, TrainConfig(batch_size=1, lr=lr, max_steps=1, layer_lr_decay=decay))
    set_lr(optimizer, lr)  # what the loop does before every step
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: lr_of[id(p)] for name, p in model.named_parameters()}


def test_each_depth_gets_the_decayed_lr():
    lrs = _lr_of(_bert(layers=3), decay=0.5)
    assert lrs["classifier.weight"] == pytest.approx(1e-3)
    assert lrs["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    for layer in range(3):  # the top layer (2) gets lr x 0.5, the bottom one lr x 0.125
        expected = 1e-3 * 0.5 ** (3 - layer)
        assert lrs[f"bert.encoder.layer.{layer}.attention.self.query.weight"] == pytest.approx(expected)
        assert lrs[f"bert.encoder.layer.{layer}.output.LayerNorm.bias"] == pytest.approx(expected)
    assert lrs["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.5**4)
    assert lrs["bert.embeddings.LayerNorm.weight"] == pytest.approx(1e-3 * 0.5**4)


def test_modernbert_layers_are_found_too():
    config = ModernBertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )  # fmt: skip
    lrs = _lr_of(ModernBertForMaskedLM(config), decay=0.5)
    assert lrs["model.embeddings.tok_embeddings.weight"] == pytest.approx(1e-3 * 0.5**3)
    assert lrs["model.layers.0.attn.Wqkv.weight"] == pytest.approx(1e-3 * 0.5**2)
    assert lrs["model.layers.1.mlp.Wo.weight"] == pytest.approx(1e-3 * 0.5)
    assert lrs["model.final_norm.weight"] == pytest.approx(1e-3)


def test_no_decay_is_one_lr_and_two_groups():
    model = _bert()
    assert set(_lr_of(model, decay=1.0).values()) == {1e-3}
    optimizer = build_optimizer(model, TrainConfig(batch_size=1, lr=1e-3, max_steps=1))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_layer_lr_decay_must_be_a_factor():
    for bad in (0.0, 1.5, -0.5):
        with pytest.raises(ConfigError, match="train.layer_lr_decay"):
            TrainConfig(batch_size=1, lr=1e-3, max_steps=1, layer_lr_decay=bad).validate()
