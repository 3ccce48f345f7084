"""Is the model reading its context?  Two numbers that tell a learning MLM from a plateaued one.

* **Unigram entropy** of the training tokens (nats, special tokens excluded; recorded in the shard
  manifest by ``pipeline shard``): the loss of a model that predicts every masked token from token
  frequencies alone.  An MLM whose loss sits near it has learned little beyond "predict frequent
  tokens".
* **Context gain** (``eval/context_gain``): the validation loss with the context destroyed minus the
  validation loss as is.  "Destroyed" keeps the predicted positions of a row exactly as the model
  saw them ([MASK] / random / original token) and replaces every *other* token with the token at the
  same position in another row of the batch (the next row; in a one-row batch the row's own tokens
  half a sequence away).  A model that ignores its context loses nothing (gain ~0); one that reads
  it loses several nats.

Reading them together: loss near the unigram entropy and a context gain near 0 is the plateau that
post-LN BERT recipes sit on for a long time at small budgets; a loss well under the unigram entropy
with a gain of several nats is a model worth fine-tuning.
"""

from __future__ import annotations

import torch

from pipeline.train import IGNORE_INDEX

__all__ = ["destroy_context", "predicted_positions"]


def destroy_context(
    input_ids: torch.Tensor, originals: torch.Tensor, predicted: torch.Tensor
) -> torch.Tensor:
    """``input_ids`` with every position that is not ``predicted`` replaced by another row's original
    token at the same position (see the module doc).

    ``input_ids`` [B, L]: the masked model input; ``originals`` [B, L]: the unmasked tokens;
    ``predicted`` [B, L] bool: the positions the loss is computed on (kept as they are)."""
    if originals.size(0) > 1:
        donor = originals.roll(1, dims=0)
    else:
        donor = originals.roll(originals.size(1) // 2, dims=1)
    return torch.where(predicted, input_ids, donor)


def predicted_positions(mlm_positions: torch.Tensor, mlm_labels: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, L] bool: True at the positions a sparse MLM batch predicts (slots labelled IGNORE_INDEX
    are padding and mark nothing)."""
    predicted = torch.zeros(mlm_positions.size(0), seq_len, dtype=torch.bool)
    predicted.scatter_(1, mlm_positions, mlm_labels != IGNORE_INDEX)
    return predicted
