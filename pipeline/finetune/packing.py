"""Packed fine-tuning batches: the examples of a micro-batch laid end to end in a few rows, no padding
between them, each attending only to itself (block-diagonal mask, ``pipeline.mlm.segments``); and
the model side, :func:`packed_logits`, which runs a BERT / ModernBERT classifier on such rows.

The fine-tuning task builds its training micro-batches with :func:`collate_packed` instead of padding
every example to the longest one (``data.packing=true``, the default)::

    batch = collate_packed([dataset[i] for i in indices], pad_id=0, row_length=128)
    out = FinetuneModel(...)(**batch)        # the same loss and gradients as the padded batch

A random SST-2 batch pads to ~3x its real tokens; packed rows carry ~1.1x.  Which examples form the
micro-batch (and so the global batch of a step) does not change: packing only lays them out, so
batches stay a pure function of (seed, step) and resume stays exact.

Layout: rows are filled first-fit, longest example first (deterministic); every example keeps its
own tokens in order with position ids ``0..n-1`` (and its ``token_type_ids``).  The batch holds

* ``input_ids``, ``position_ids``, ``token_type_ids`` (if the features have them): ``[R, L]``, with
  ``L`` the longest filled row (at most ``row_length``);
* ``segment_ids`` ``[R, L]``: the example's index in the micro-batch, ``PAD_SEGMENT`` for padding;
* ``example_starts`` ``[E]``: the flat index (``row * L + column``) of each example's first token
  (its [CLS]), in micro-batch order;
* ``labels``: ``[E]`` for classification / regression (micro-batch order), ``[R, L]`` for NER
  (per token, -100 where ignored and on padding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    PreTrainedModel,
)

from pipeline.mlm import PAD_SEGMENT, segment_attention_mask, supports_segments
from pipeline.train import IGNORE_INDEX

__all__ = ["can_pack", "collate_packed", "pack_rows", "packed_logits"]

_PER_TOKEN = ("input_ids", "token_type_ids")  # copied token by token into the rows


def pack_rows(lengths: list[int], capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing: ``(row, start)`` of every item and the number of rows.  Items longer
    than ``capacity`` get a row of their own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows, starts, fill = np.zeros(len(lengths), np.int64), np.zeros(len(lengths), np.int64), []
    for i in order:
        row = next((r for r, used in enumerate(fill) if used + lengths[i] <= capacity), len(fill))
        if row == len(fill):
            fill.append(0)
        rows[i], starts[i] = row, fill[row]
        fill[row] += lengths[i]
    return rows, starts, len(fill)


def collate_packed(features: list[dict[str, Any]], pad_id: int, row_length: int) -> dict[str, torch.Tensor]:
    """Pack ``features`` (dataset items: ``input_ids``, optional ``token_type_ids``, ``labels``) into
    rows of at most ``row_length`` tokens (see the module docstring for the layout)."""
    lengths = [len(f["input_ids"]) for f in features]
    rows, starts, num_rows = pack_rows(lengths, row_length)
    width = int(max(starts + lengths)) if features else 0
    keys = [k for k in _PER_TOKEN if k in features[0]]
    token_labels = "labels" in features[0] and isinstance(features[0]["labels"], (list, tuple))
    out = {key: np.full((num_rows, width), pad_id if key == "input_ids" else 0, np.int64) for key in keys}
    out["position_ids"] = np.zeros((num_rows, width), np.int64)
    out["segment_ids"] = np.full((num_rows, width), PAD_SEGMENT, np.int64)
    if token_labels:
        out["labels"] = np.full((num_rows, width), IGNORE_INDEX, np.int64)
    for index, (item, row, start, n) in enumerate(zip(features, rows, starts, lengths)):
        span = slice(start, start + n)
        for key in keys + (["labels"] if token_labels else []):
            out[key][row, span] = item[key]
        out["position_ids"][row, span] = np.arange(n)
        out["segment_ids"][row, span] = index
    batch = {key: torch.from_numpy(value) for key, value in out.items()}
    batch["example_starts"] = torch.from_numpy(rows * width + starts)
    if "labels" in features[0] and not token_labels:
        values = [f["labels"] for f in features]
        batch["labels"] = torch.tensor(
            values, dtype=torch.float if isinstance(values[0], float) else torch.long
        )
    return batch


# ----------------------------------------------------------------------------- the model side


def can_pack(model: PreTrainedModel) -> bool:
    """Whether :func:`packed_logits` knows ``model``'s head and its attention takes a 4-D mask."""
    return isinstance(model, _HEADS) and supports_segments(model.config)


def _encode(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoder's last hidden states [R, L, H] of the packed rows."""
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": segment_attention_mask(model.config, batch["segment_ids"]),
        "position_ids": batch["position_ids"],
    }
    if model.config.model_type == "bert":
        if batch.get("token_type_ids") is not None:
            inputs["token_type_ids"] = batch["token_type_ids"]
        return model.bert(**inputs).last_hidden_state
    return model.model(**inputs).last_hidden_state


def _pool(model: PreTrainedModel, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One vector per example [E, H]: its first token ([CLS]), or its mean for ModernBERT's
    ``classifier_pooling="mean"`` (over every real token, as the padded model averages)."""
    flat = hidden.flatten(0, 1)
    starts = batch["example_starts"]
    if getattr(model.config, "classifier_pooling", "cls") != "mean":
        return flat[starts]
    slot = batch["segment_ids"].flatten() + 1  # padding (-1) -> slot 0, dropped below
    sums = flat.new_zeros(starts.numel() + 1, flat.size(-1), dtype=torch.float32)
    sums.index_add_(0, slot, flat.float())
    counts = torch.bincount(slot, minlength=starts.numel() + 1).unsqueeze(1)
    return (sums[1:] / counts[1:]).to(hidden.dtype)


def packed_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What ``model(**padded_batch).logits`` gives for the real examples: [E, labels] per example,
    or [R, L, labels] per token for token classification.  The heads are the model's own modules."""
    hidden = _encode(model, batch)
    is_bert = model.config.model_type == "bert"
    if isinstance(model, (BertForTokenClassification, ModernBertForTokenClassification)):
        features = model.dropout(hidden) if is_bert else model.drop(model.head(hidden))
        return model.classifier(features)
    pooled = _pool(model, hidden, batch)
    if is_bert:
        pooler = model.bert.pooler
        return model.classifier(model.dropout(pooler.activation(pooler.dense(pooled))))
    return model.classifier(model.drop(model.head(pooled)))


_HEADS = (
    BertForSequenceClassification,
    BertForTokenClassification,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
)
