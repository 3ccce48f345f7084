"""Fine-tuning models: a transformers head (sequence / token classification) plus its summed loss.

``model.init_from`` is a directory produced by ``pipeline pretrain`` (its ``final/``) or any local
Hugging Face model directory; ``none`` builds an architecture with random weights (to measure what
pretraining buys): the one in ``model.architecture_from``'s ``config.json`` (with its tokenizer), or
else the one the size keys describe.  :class:`FinetuneModel` returns the *summed* loss and
the number of correct predictions, like ``SparseMLM``, so the shared loop normalises by the
global number of targets (examples, or labelled tokens for NER).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from pipeline.config import REQUIRED, option
from pipeline.errors import ConfigError, PipelineError
from pipeline.finetune.packing import packed_logits
from pipeline.finetune.task import TaskType
from pipeline.mlm import ENCODER_LAYER_CLASS, ModelConfig, dropout_settings, encoder_config
from pipeline.text import load_tokenizer as load_saved_tokenizer
from pipeline.train import IGNORE_INDEX


@dataclass
class FinetuneModelConfig(ModelConfig):
    """The ``model`` section of ``pipeline finetune`` (size keys apply to init_from=none only)."""

    init_from: str = option(
        REQUIRED, "pretrained model directory (a pretrain run's final/ or any local HF model), or none"
    )
    dropout: float = option(
        0.1,
        "encoder dropout while fine-tuning (hidden states, attention), also set on init_from's model: pretraining usually runs without it, fine-tuning benefits (BERT recipe)",
    )
    architecture_from: str | None = option(
        None,
        "with init_from=none: a model directory whose config.json (architecture and sizes) and tokenizer are used, with random weights - e.g. the pretrained model, to measure what its pretraining buys; the size keys are then ignored",
    )
    tokenizer: str | None = option(
        None,
        "tokenizer directory; default: the one saved in init_from (or architecture_from; one of them is required for none)",
    )
    pooling: Literal["auto", "cls", "mean"] = option(
        "auto",
        "what a sequence head reads: cls (the [CLS] token) | mean (every real token; ModernBERT only) | auto = mean for ModernBERT (SST-2, one epoch from the quickstart model: 0.812 +- 0.003 vs cls 0.813 +- 0.008 over 3 seeds - equal; mean is steadier), cls otherwise",
    )
    classifier_dropout: float | None = option(
        None, "dropout before the classification head (null = model default)"
    )
    trust_remote_code: bool = option(
        False, "allow model code shipped inside init_from (off: never run downloaded code)"
    )

    def matmul_dims(self) -> tuple[int, int]:
        """(hidden size, feed-forward width) of the model ``init_from`` holds (else of the preset)."""
        try:
            saved = json.loads((Path(self.init_from) / "config.json").read_text())
            return int(saved["hidden_size"]), int(saved["intermediate_size"])
        except (OSError, ValueError, KeyError, TypeError):  # none, or unreadable: the build reports it
            return super().matmul_dims()

    def validate(self) -> None:
        super().validate()
        if self.init_from == "none" and not (self.tokenizer or self.architecture_from):
            raise ConfigError(
                "model.init_from=none needs model.tokenizer (a tokenizer directory) or model.architecture_from"
            )
        if self.architecture_from and self.init_from != "none":
            raise ConfigError("model.architecture_from is for model.init_from=none (random weights) only")

    def tokenizer_source(self) -> tuple[str, str]:
        """(config key, directory) of the tokenizer: model.tokenizer, else the model directory."""
        if self.tokenizer:
            return "model.tokenizer", self.tokenizer
        if self.init_from == "none":
            return "model.architecture_from", str(self.architecture_from)
        return "model.init_from", self.init_from


def check_model_dir(path: str | Path, key: str) -> None:
    """``path`` must be a model directory (a ``config.json``): one error naming ``key`` otherwise."""
    if not (Path(path) / "config.json").is_file():
        raise PipelineError(
            f"{key}={path} is not a model directory (no config.json); point it at a "
            "pretrain run's final/ or a local Hugging Face model"
        )


def check_init_from(cfg: FinetuneModelConfig) -> None:
    if cfg.init_from != "none":
        check_model_dir(cfg.init_from, "model.init_from")
    elif cfg.architecture_from:
        check_model_dir(cfg.architecture_from, "model.architecture_from")


def load_tokenizer(cfg: FinetuneModelConfig):
    """The tokenizer of the ``model`` section (:meth:`FinetuneModelConfig.tokenizer_source`)."""
    check_init_from(cfg)
    key, source = cfg.tokenizer_source()
    return load_saved_tokenizer(source, key=key, trust_remote_code=cfg.trust_remote_code)


def _head_class(task: TaskType):
    return AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification


def build_model(
    cfg: FinetuneModelConfig, task: TaskType, label_names: list[str], tokenizer
) -> PreTrainedModel:
    num_labels = 1 if task == "regression" else len(label_names)
    labels = (
        {}
        if task == "regression"
        else {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    )
    extra = {
        "num_labels": num_labels,
        "problem_type": "regression" if task == "regression" else None,
        **labels,
    }
    if cfg.classifier_dropout is not None:
        extra["classifier_dropout"] = cfg.classifier_dropout
    if cfg.init_from == "none":
        config = _random_init_config(cfg, tokenizer)
        extra.update(pooling_settings(config, cfg.pooling))
        for key, value in extra.items():
            setattr(config, key, value)
        return _head_class(task).from_config(
            config, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attention()
        )
    check_init_from(cfg)
    path = Path(cfg.init_from)
    try:
        saved = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise PipelineError(f"cannot load a model from model.init_from={path}: {e}") from None
    pooling = pooling_settings(saved, cfg.pooling)  # outside the try: its error names the key
    try:
        return _head_class(task).from_pretrained(
            path,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation=cfg.attention(),
            **extra,
            **dropout_settings(saved, cfg.dropout),
            **pooling,
        )
    except (OSError, ValueError, KeyError) as e:
        raise PipelineError(f"cannot load a model from model.init_from={path}: {e}") from None


def pooling_settings(config, pooling: str) -> dict[str, str]:
    """The config setting for ``model.pooling``: ModernBERT's ``classifier_pooling``; BERT-like heads
    read ``[CLS]`` (through their pooler) and have no other choice."""
    if not hasattr(config, "classifier_pooling"):
        if pooling == "mean":
            raise ConfigError(
                f"model.pooling=mean needs a model with mean pooling (ModernBERT); this one is {config.model_type}"
            )
        return {}
    return {"classifier_pooling": "mean" if pooling == "auto" else pooling}


def _random_init_config(cfg: FinetuneModelConfig, tokenizer):
    """The architecture of ``init_from=none``: ``architecture_from``'s config.json, or the size keys."""
    if cfg.architecture_from:
        try:
            config = AutoConfig.from_pretrained(
                cfg.architecture_from, trust_remote_code=cfg.trust_remote_code
            )
        except (OSError, ValueError, KeyError) as e:
            raise PipelineError(f"cannot read model.architecture_from={cfg.architecture_from}: {e}") from None
        config.update(dropout_settings(config, cfg.dropout))
        return config
    ids = {
        "pad": tokenizer.pad_token_id,
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
        "mask": tokenizer.mask_token_id,
    }
    return encoder_config(cfg, vocab_size=len(tokenizer), special_ids=ids)


class FinetuneModel(torch.nn.Module):
    """forward(**batch) -> {"loss_sum", "correct"} summed over the batch's targets (+ "predictions" if asked)."""

    def __init__(self, model: PreTrainedModel, task: TaskType):
        super().__init__()
        self.model = model
        self.task = task
        # FSDP's transformer-layer auto-wrap reads this: one unit per encoder layer (as in SparseMLM)
        layer = ENCODER_LAYER_CLASS.get(model.config.model_type)
        self._no_split_modules = [layer] if layer else list(getattr(model, "_no_split_modules", None) or [])

    def forward(
        self,
        input_ids,
        attention_mask=None,
        labels=None,
        token_type_ids=None,
        weight=None,
        predict: bool = False,
        position_ids=None,
        segment_ids=None,
        example_starts=None,
    ):
        """A padded batch (``attention_mask``), or a packed one (``segment_ids``, ``position_ids``,
        ``example_starts``: ``pipeline.finetune.packing``).  ``weight`` [B] (optional) scales each
        example's loss; evaluation uses 0 for padding rows."""
        inputs = {"input_ids": input_ids}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if segment_ids is not None:
            packed = {
                "position_ids": position_ids,
                "segment_ids": segment_ids,
                "example_starts": example_starts,
            }
            logits = packed_logits(self.model, {**inputs, **packed}).float()
        else:
            logits = self.model(**inputs, attention_mask=attention_mask).logits.float()
        predictions = logits.squeeze(-1) if self.task == "regression" else logits.argmax(dim=-1)
        out = {"predictions": predictions.detach()} if predict else {}
        if labels is None:
            return out
        if self.task == "regression":
            losses = (predictions - labels.float()) ** 2
            correct = torch.zeros_like(losses)
        else:
            losses = F.cross_entropy(
                logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            ).view(labels.shape)
            correct = ((predictions == labels) & (labels != IGNORE_INDEX)).float()
        if weight is not None:
            shape = (-1,) + (1,) * (losses.dim() - 1)
            losses, correct = losses * weight.view(shape), correct * weight.view(shape)
        out["loss_sum"], out["correct"] = losses.sum(), correct.sum()
        return out


def count_targets(batch: dict) -> int:
    labels = batch["labels"]
    return int((labels != IGNORE_INDEX).sum()) if labels.dim() > 1 else int(labels.numel())
