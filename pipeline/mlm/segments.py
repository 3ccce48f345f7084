"""Block-diagonal attention for packed rows: several documents or examples in one row of tokens.

Used by the pretraining model (``mlm.document_mask=true``: tokens attend only within their own
document of a packed shard row) and by packed fine-tuning batches (several examples per row, no
padding between them).  A row is described by *segment ids* ``[B, L]``: token ``i`` may attend to
token ``j`` of its row iff ``segment[i] == segment[j]``.  Padding is a segment of its own (it attends
to itself, so no query row is empty and nothing turns into NaN; real tokens never see it)::

    segments = document_segments(input_ids, sep_id=3, pad_id=0)      # shard rows: [SEP] ends a document
    mask = segment_attention_mask(hf_model.config, segments)        # what the encoder takes
    hidden = encoder(input_ids=..., attention_mask=mask, position_ids=...).last_hidden_state

The mask is the 4-D form transformers passes through unchanged (``create_bidirectional_mask``
returns a 4-D mask as is): boolean (True = attend) for SDPA, additive float (0 / dtype minimum) for
the eager path.  ModernBERT takes a ``{"full_attention", "sliding_attention"}`` mapping; its
sliding layers keep their window (``|i - j| <= config.sliding_window``) inside each segment, which
is what the unpacked sequence would see.
"""

from __future__ import annotations

import torch

__all__ = ["PAD_SEGMENT", "document_segments", "segment_attention_mask", "supports_segments"]

PAD_SEGMENT = -1  # segment id of padding positions
_MASK_FORMS = {"sdpa": "bool", "eager": "additive"}  # attention backends that take a 4-D mask


def supports_segments(config) -> bool:
    """Whether this model's attention backend takes the 4-D masks built here."""
    return config._attn_implementation in _MASK_FORMS


def document_segments(input_ids: torch.Tensor, sep_id: int, pad_id: int) -> torch.Tensor:
    """Segment ids of packed shard rows (``[CLS] d1 [SEP] d2 [SEP] ...``): the number of [SEP]
    tokens before each position, so a [SEP] belongs to the document it ends; padding is
    :data:`PAD_SEGMENT`."""
    is_sep = (input_ids == sep_id).to(torch.int32)
    segments = torch.cumsum(is_sep, dim=1) - is_sep
    return torch.where(input_ids == pad_id, PAD_SEGMENT, segments)


def _band(length: int, half_window: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device)
    return (position[:, None] - position[None, :]).abs() <= half_window


def _as_mask(allowed: torch.Tensor, form: str) -> torch.Tensor:
    if form == "bool":
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return blocked.masked_fill_(~allowed, torch.finfo(torch.float32).min)


def segment_attention_mask(config, segments: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """The encoder's ``attention_mask`` for rows with ``segments`` [B, L] (see the module doc)."""
    form = _MASK_FORMS.get(config._attn_implementation)
    if form is None:
        raise ValueError(
            f"attention backend {config._attn_implementation!r} takes no 4-D mask: use sdpa or eager"
        )
    allowed = segments[:, None, :, None] == segments[:, None, None, :]  # [B, 1, L, L]
    if config.model_type != "modernbert":
        return _as_mask(allowed, form)
    local = allowed & _band(segments.shape[1], config.sliding_window, segments.device)
    return {"full_attention": _as_mask(allowed, form), "sliding_attention": _as_mask(local, form)}
