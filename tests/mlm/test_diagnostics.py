"""The context probe (eval/context_gain): ~0 for a model that ignores its context, large for one that
reads it - both models built by hand, run through the real MLM evaluator and Masker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.mlm import Masker, MaskingConfig, mlm_evaluator
from pipeline.mlm.diagnostics import destroy_context, predicted_positions
from pipeline.train import IGNORE_INDEX

VOCAB, SEQ, SPECIALS = 64, 24, 5  # ids 0-4 are special ([PAD] [UNK] [CLS] [SEP] [MASK] = 4)
MASK_ID = 4


class CountingRows:
    """A stand-in ShardReader: row r counts up from its own start, ``5 + (start + i) % 59``, so every
    token is its left neighbour + 1 (mod the 59 ordinary ids) - a text whose context decides each token."""

    def __init__(self, rows: int):
        self.starts = (np.arange(rows) * 7919) % (VOCAB - SPECIALS)

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, indices: np.ndarray) -> np.ndarray:
        steps = self.starts[np.asarray(indices)][:, None] + np.arange(SEQ)[None, :]
        return (SPECIALS + steps % (VOCAB - SPECIALS)).astype(np.uint16)


class _Probe(torch.nn.Module):
    """SparseMLM's interface: forward(input_ids, attention_mask, mlm_positions, mlm_labels) -> sums;
    subclasses say how they score the masked positions (``logits``)."""

    def forward(self, input_ids, attention_mask, mlm_positions, mlm_labels):
        logits = self.logits(input_ids, mlm_positions).reshape(-1, VOCAB)
        labels = mlm_labels.reshape(-1)
        loss_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        real = labels != IGNORE_INDEX
        correct = ((logits.argmax(-1) == labels) & real).sum().float()
        return {"loss_sum": loss_sum, "count": real.sum().float(), "correct": correct}


class ContextFree(_Probe):
    """Predicts each masked token from the token at its own position only (a unigram + copy model)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.randn(VOCAB, VOCAB)

    def logits(self, input_ids, positions):
        return self.table[input_ids.gather(1, positions)]


class LeftNeighbour(_Probe):
    """Predicts each masked token as its left neighbour + 1: right whenever the neighbour is visible."""

    def logits(self, input_ids, positions):
        left = input_ids.gather(1, (positions - 1).clamp(min=0))
        guess = SPECIALS + (left - SPECIALS + 1) % (VOCAB - SPECIALS)
        return torch.where(F.one_hot(guess, VOCAB).bool(), 8.0, -8.0)


class _Single:
    num_processes, process_index, device = 1, 0, torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        return tensor


def _evaluate(model: _Probe, batch_size: int = 8) -> dict[str, float]:
    masker = Masker(
        MaskingConfig(probability=0.15),
        seq_len=SEQ,
        vocab_size=VOCAB,
        special_ids=list(range(SPECIALS)),
        mask_id=MASK_ID,
    )
    return mlm_evaluator(_Single(), CountingRows(40), masker, batch_size)(model)


def test_context_free_model_gains_nothing():
    metrics = _evaluate(ContextFree())
    assert metrics["eval/loss"] > 1.0  # it predicts badly ...
    assert abs(metrics["eval/context_gain"]) < 1e-9  # ... and exactly as badly without context
    assert metrics["eval/loss_without_context"] == pytest.approx(metrics["eval/loss"], abs=1e-9)


@pytest.mark.parametrize("batch_size", [8, 1])
def test_context_reading_model_gains_several_nats(batch_size):
    metrics = _evaluate(LeftNeighbour(), batch_size)
    assert metrics["eval/accuracy"] > 0.8  # wrong only where the left neighbour was masked too
    # without context the neighbour is another row's token: a -16 logit gap on almost every prediction
    assert metrics["eval/context_gain"] > 10.0
    assert metrics["eval/context_gain"] == pytest.approx(
        metrics["eval/loss_without_context"] - metrics["eval/loss"]
    )


def test_destroy_context_keeps_predictions_and_borrows_the_rest():
    originals = torch.arange(12).reshape(3, 4)
    masked = originals.clone()
    masked[0, 1] = masked[2, 3] = MASK_ID
    predicted = torch.zeros(3, 4, dtype=torch.bool)
    predicted[0, 1] = predicted[2, 3] = True
    out = destroy_context(masked, originals, predicted)
    expected = originals.roll(1, dims=0)
    expected[0, 1] = expected[2, 3] = MASK_ID
    assert torch.equal(out, expected)
    single = destroy_context(masked[:1], originals[:1], predicted[:1])
    assert torch.equal(single, torch.tensor([[2, MASK_ID, 0, 1]]))


def test_predicted_positions_ignores_padding_slots():
    positions = torch.tensor([[3, 1, 0], [2, 0, 0]])
    labels = torch.tensor([[7, 8, IGNORE_INDEX], [9, IGNORE_INDEX, IGNORE_INDEX]])
    got = predicted_positions(positions, labels, 5)
    assert got.tolist() == [[False, True, False, True, False], [False, False, True, False, False]]
