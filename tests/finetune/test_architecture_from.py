"""`model.init_from=none model.architecture_from=DIR`: the architecture and tokenizer of a model
directory with random weights (what `pipeline evaluate compare=[none]` fine-tunes)."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import ConfigError, from_dict
from pipeline.finetune import FinetuneModelConfig, build_model, load_tokenizer


def model_cfg(**keys) -> FinetuneModelConfig:
    return from_dict(FinetuneModelConfig, keys, prefix="model.")


def test_keys_are_checked():
    with pytest.raises(
        ConfigError, match="init_from=none needs model.tokenizer .* or model.architecture_from"
    ):
        model_cfg(init_from="none")
    with pytest.raises(ConfigError, match="architecture_from is for model.init_from=none"):
        model_cfg(init_from="some/dir", architecture_from="other/dir")
    assert model_cfg(init_from="none", architecture_from="d").tokenizer_source() == (
        "model.architecture_from",
        "d",
    )
    assert model_cfg(init_from="d", tokenizer="t").tokenizer_source() == ("model.tokenizer", "t")


def test_random_weights_in_the_saved_architecture(tiny_pretrained):
    cfg = model_cfg(init_from="none", architecture_from=str(tiny_pretrained), preset="mini", dropout=0.0)
    tokenizer = load_tokenizer(cfg)
    assert len(tokenizer) == len(load_tokenizer(model_cfg(init_from=str(tiny_pretrained))))

    def build(seed: int):
        torch.manual_seed(seed)
        return build_model(cfg, "classification", ["0", "1"], tokenizer)

    model = build(0)
    saved = json.loads((tiny_pretrained / "config.json").read_text())
    assert model.config.hidden_size == saved["hidden_size"] != 256  # the directory's size, not the preset's
    assert model.config.num_hidden_layers == saved["num_hidden_layers"]
    assert model.config.hidden_dropout_prob == 0.0 and model.config.num_labels == 2
    pretrained = build_model(
        model_cfg(init_from=str(tiny_pretrained)), "classification", ["0", "1"], tokenizer
    )
    weights = dict(model.named_parameters())
    name = next(n for n in weights if n.endswith("word_embeddings.weight"))
    assert not torch.equal(weights[name], dict(pretrained.named_parameters())[name])
    assert torch.equal(weights[name], dict(build(0).named_parameters())[name])  # the seed decides
    assert not torch.equal(weights[name], dict(build(1).named_parameters())[name])
