"""Masked-LM data for the training loop: packed shards -> masked micro-batches, and MLM evaluation.

The ``data`` section of ``pipeline pretrain`` (:class:`MlmDataConfig`) says which shard set to read.

Training batches are a pure function of (step, micro-batch, rank) - see ``pipeline.train.batches`` - and
masks are keyed by each sequence's global stream position, so resuming and changing the world size
do not change what is trained on.  Validation masks are keyed by the sequence's index in the
validation split (in a separate key range), so every evaluation sees the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import console
from pipeline.config import REQUIRED, option
from pipeline.mlm.diagnostics import destroy_context, predicted_positions
from pipeline.mlm.masking import Masker
from pipeline.shards import ShardReader
from pipeline.train import IGNORE_INDEX, GlobalBatchPlan, eval_batches

_EVAL_KEY_OFFSET = np.uint64(1 << 62)  # validation mask keys never collide with training positions


@dataclass
class MlmDataConfig:
    """The ``data`` section of ``pipeline pretrain``."""

    shards: str = option(REQUIRED, "shard set directory written by `pipeline shard` (holds manifest.json)")
    verify: bool = option(False, "check every shard's sha256 before training (slow on big sets)")
    eval_batch_size: int = option(0, "validation micro-batch size per process (0 = train.batch_size)")


def _with_counters(batch: dict) -> dict:
    batch["num_targets"] = int((batch["mlm_labels"] != IGNORE_INDEX).sum())
    return batch


def _pin(batch: dict) -> dict:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_batch_fn(reader: ShardReader, masker: Masker, plan: GlobalBatchPlan) -> Callable[[int, int], dict]:
    """``make_batch(step, micro)`` for the loop.  On a CUDA machine the tensors come back in pinned
    memory (the pinning runs in the loop's prefetch thread), so the loop's ``non_blocking`` copy to
    the GPU is truly asynchronous."""
    pin = torch.cuda.is_available()

    def make_batch(step: int, micro: int) -> dict:
        positions = plan.positions(step, micro)
        batch = _with_counters(masker(reader.take(plan.samples(positions)), positions.astype(np.uint64)))
        return _pin(batch) if pin else batch

    return make_batch


def mlm_evaluator(
    accelerator,
    reader: ShardReader,
    masker: Masker,
    batch_size: int,
    max_batches: int = 0,
    unigram_entropy: float | None = None,
):
    """Returns ``evaluate(model) -> {"eval/loss", "eval/accuracy", "eval/perplexity",
    "eval/loss_without_context", "eval/context_gain"}`` over the split: means over every masked
    token of the split, summed across processes.  The context probe (:mod:`pipeline.mlm.diagnostics`)
    is one more forward per batch on the same masks with every unpredicted token replaced.  With
    the training data's ``unigram_entropy`` each evaluation also says where the loss stands."""
    batches = eval_batches(
        len(reader), batch_size, accelerator.num_processes, accelerator.process_index, max_batches
    )

    def evaluate(model) -> dict[str, float]:
        totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
        for indices, valid in batches:
            tokens = reader.take(indices)
            batch = masker(tokens, indices.astype(np.uint64) + _EVAL_KEY_OFFSET)
            batch["mlm_labels"][torch.from_numpy(~valid)] = IGNORE_INDEX  # padding rows count for nothing
            inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k != "num_tokens"}
            out = model(**inputs)
            predicted = predicted_positions(batch["mlm_positions"], batch["mlm_labels"], tokens.shape[1])
            originals = torch.from_numpy(tokens.astype(np.int64))
            inputs["input_ids"] = destroy_context(batch["input_ids"], originals, predicted).to(
                accelerator.device
            )
            blind = model(**inputs)
            totals += torch.stack([out["loss_sum"], out["correct"], out["count"], blind["loss_sum"]]).double()
        loss_sum, correct, count, blind_sum = accelerator.reduce(totals, reduction="sum").tolist()
        count = max(count, 1.0)
        loss, blind_loss = loss_sum / count, blind_sum / count
        _report(loss, blind_loss - loss, unigram_entropy)
        return {
            "eval/loss": loss,
            "eval/accuracy": correct / count,
            "eval/perplexity": float(np.exp(min(loss, 50.0))),
            "eval/loss_without_context": blind_loss,
            "eval/context_gain": blind_loss - loss,
        }

    return evaluate


def _report(loss: float, context_gain: float, unigram_entropy: float | None) -> None:
    where = ""
    if unigram_entropy is not None:
        gap = unigram_entropy - loss
        side = "under" if gap >= 0 else "above"
        where = f" ({abs(gap):.2f} nats {side} the unigram entropy {unigram_entropy:.2f})"
    console.info(f"eval: MLM loss {loss:.3f}{where}, context gain {context_gain:.2f} nats")
