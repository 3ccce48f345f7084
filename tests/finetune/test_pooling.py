"""`model.pooling`: what a sequence head reads. auto = mean for ModernBERT (the fine-tuning recipe
from our pretraining, README), cls otherwise; mean on a model without mean pooling is refused."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import ConfigError, from_dict
from pipeline.finetune import FinetuneModelConfig, build_model, load_tokenizer


def model_cfg(**keys) -> FinetuneModelConfig:
    return from_dict(FinetuneModelConfig, keys, prefix="model.")


@pytest.fixture(scope="module")
def modernbert_dir(tiny_pretrained, tmp_path_factory):
    """A saved tiny ModernBERT (random weights) with the tiny pretraining run's tokenizer."""
    cfg = model_cfg(init_from="none", tokenizer=str(tiny_pretrained), arch="modernbert", preset="tiny")
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, "classification", ["0", "1"], tokenizer)
    out = tmp_path_factory.mktemp("modernbert")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def head(directory, pooling: str):
    cfg = model_cfg(init_from=str(directory), pooling=pooling, dropout=0.0)
    torch.manual_seed(0)  # the same classifier weights for every pooling
    return build_model(cfg, "classification", ["0", "1"], load_tokenizer(cfg)).eval()


def test_auto_is_mean_for_modernbert_and_the_head_reads_it(modernbert_dir):
    auto, cls, mean = (head(modernbert_dir, p) for p in ("auto", "cls", "mean"))
    assert auto.config.classifier_pooling == mean.config.classifier_pooling == "mean"
    assert cls.config.classifier_pooling == "cls"
    ids = torch.tensor([[1, 5, 6, 7, 8, 2]])
    with torch.no_grad():
        logits = {name: m(input_ids=ids).logits for name, m in (("auto", auto), ("cls", cls), ("mean", mean))}
    assert torch.equal(logits["auto"], logits["mean"])
    assert not torch.allclose(logits["cls"], logits["mean"])  # the setting reaches the forward


def test_bert_reads_cls_and_refuses_mean(tiny_pretrained):
    assert not hasattr(head(tiny_pretrained, "auto").config, "classifier_pooling")
    with pytest.raises(ConfigError, match="model.pooling=mean needs a model with mean pooling"):
        head(tiny_pretrained, "mean")
    with pytest.raises(ConfigError, match="model.pooling=mean needs"):
        cfg = model_cfg(init_from="none", architecture_from=str(tiny_pretrained), pooling="mean")
        build_model(cfg, "classification", ["0", "1"], load_tokenizer(cfg))
