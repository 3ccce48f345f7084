"""Dynamic masked-LM masking: deterministic, vectorised, independent of batch layout and world size.

The training loop calls a :class:`Masker` on every micro-batch of packed token rows::

    masker = Masker(cfg.mlm, seq_len=128, vocab_size=len(tokenizer), special_ids=[0, 1, 2, 3, 4],
                    mask_id=4, pad_id=0, continuation=word_continuation_table(tokenizer), seed=cfg.train.seed)
    batch = masker(tokens, keys)   # tokens [B, L] ints, keys [B] = global sample index of each row

Randomness is a counter-based hash (splitmix64) of ``(seed, key, token position, stream)`` - no RNG
state - so a row gets the same mask whichever process, micro-batch or resume point handles it.

Selection: every row predicts exactly ``k = floor(probability * n_maskable + 0.5)`` tokens
(``n_maskable`` = its non-special tokens), so full rows always have the same number of predictions
and the sparse MLM head runs on a static shape of ``max_predictions`` slots per row, where
``max_predictions = floor(probability * seq_len + 0.5)`` bounds ``k`` for any row (even one with no
special tokens at all).  Selected positions get ``[MASK]`` / a random non-special token / their
original token in the configured proportions (80/10/10 by default).

Whole-word masking treats a word (a start token plus the continuation tokens after it, per the
``continuation`` table) as one unit: words are taken in a random order while the running token
count stays within ``k``, so every sub-token of a chosen word is predicted and none of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import ConfigError, option
from pipeline.errors import PipelineError
from pipeline.hashing import GOLDEN, keyed_hash, splitmix64
from pipeline.train import IGNORE_INDEX  # the label of padded prediction slots

# Independent hash streams, so which tokens are chosen and what replaces them are uncorrelated.
_STREAM_SELECT, _STREAM_REPLACE = 0, 1


@dataclass
class MaskingConfig:
    probability: float = option(0.15, "fraction of the non-special tokens of each row that are predicted")
    mask_token_fraction: float = option(0.8, "of the predicted tokens: fraction replaced by [MASK]")
    random_token_fraction: float = option(
        0.1, "of the predicted tokens: fraction replaced by a random token (the rest stay)"
    )
    whole_word: bool = option(False, "predict whole words: all sub-tokens of a chosen word together")
    document_mask: bool = option(
        False,
        "attend only within the own document of a packed shard row (documents end at the packer's [SEP]; block-diagonal attention mask); its measured speed and loss effect: README",
    )

    def validate(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise ConfigError(f"mlm.probability must be in (0, 1), got {self.probability}")
        for key in ("mask_token_fraction", "random_token_fraction"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mlm.{key} must be in [0, 1], got {value}")
        if self.mask_token_fraction + self.random_token_fraction > 1.0 + 1e-9:
            raise ConfigError(
                "mlm.mask_token_fraction + mlm.random_token_fraction must be <= 1, got "
                f"{self.mask_token_fraction} + {self.random_token_fraction}"
            )


def _round_half_up(x: np.ndarray | float) -> np.ndarray:
    # np.round rounds half to even; half-up makes k a simple, documented function of n_maskable
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


class Masker:
    """Turns packed token rows into MLM inputs, positions and labels (see the module docstring).

    ``vocab_size`` is the tokenizer's vocabulary (random replacements are drawn from its non-special
    ids), not the model's padded embedding size.  ``pad_id`` marks padding for the attention mask; it
    and ``mask_id`` are never selected, like every id in ``special_ids``.
    """

    def __init__(
        self,
        cfg: MaskingConfig,
        *,
        seq_len: int,
        vocab_size: int,
        special_ids: list[int],
        mask_id: int,
        continuation: np.ndarray | None = None,
        seed: int = 0,
        pad_id: int = 0,
    ):
        cfg.validate()
        if cfg.whole_word and continuation is None:
            raise ConfigError("mlm.whole_word=true needs the tokenizer's word-continuation table")
        if continuation is not None and len(continuation) < vocab_size:
            raise PipelineError(
                f"word-continuation table has {len(continuation)} entries for a vocabulary of {vocab_size}"
            )
        self.cfg = cfg
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = pad_id
        never_selected = sorted({*special_ids, mask_id, pad_id})
        if never_selected[0] < 0 or never_selected[-1] >= vocab_size:
            raise PipelineError(
                f"special token ids {never_selected} fall outside the vocabulary of {vocab_size}"
            )
        self._special = np.zeros(vocab_size, dtype=bool)
        self._special[never_selected] = True
        self._replacements = np.flatnonzero(~self._special).astype(np.int64)
        if len(self._replacements) == 0:
            raise PipelineError("the vocabulary has no non-special tokens to predict")
        self._continuation = (
            None if continuation is None else np.asarray(continuation, dtype=bool)[:vocab_size]
        )
        with np.errstate(over="ignore"):
            seed_mix = np.full(2, seed % 2**64, dtype=np.uint64) * GOLDEN + np.arange(2, dtype=np.uint64)
        self._seed_state = splitmix64(seed_mix)  # one starting state per stream
        # low bits of a selection score hold the word's start position, so scores are unique per word
        self._position_bits = np.uint64(max(seq_len, 1).bit_length())
        self.max_predictions: int = int(_round_half_up(cfg.probability * seq_len))

    # ------------------------------------------------------------------ hashing

    def _row_states(self, keys: np.ndarray, stream: int) -> np.ndarray:
        """[B] uint64: the hash state of each row for one stream, from (seed, stream, key)."""
        return splitmix64(keys ^ self._seed_state[stream])

    @staticmethod
    def _token_bits(row_states: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """uint64 hash of (row state, token position); broadcasts like ``row_states + positions``."""
        return keyed_hash(row_states, positions.astype(np.uint64) + np.uint64(1))

    # ------------------------------------------------------------------ selection

    def _unit_starts(self, tokens: np.ndarray, special: np.ndarray) -> np.ndarray:
        """True where a selection unit begins: every maskable token, or only word starts (whole-word)."""
        if not self.cfg.whole_word:
            return ~special
        starts = ~self._continuation[tokens]
        starts[:, 0] = True
        starts[:, 1:] |= special[:, :-1]  # a word never continues across CLS/SEP/PAD
        return starts & ~special

    def _select(self, tokens: np.ndarray, keys: np.ndarray, special: np.ndarray, k: np.ndarray) -> np.ndarray:
        """[B, L] bool: the predicted positions, at most ``k`` per row, whole units only.

        Each unit gets a random score; sorting a row by score puts its units in random order, each
        unit's tokens adjacent (equal scores; specials share the maximum and sort last).  A unit is
        chosen when the maskable tokens before it plus its own size still fit in ``k``."""
        batch, length = tokens.shape
        positions = np.arange(length, dtype=np.int32)  # narrow ints: the scans below are memory-bound
        starts = self._unit_starts(tokens, special)
        # every token takes the position (and so the score) of the start of its unit
        unit_start = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
        row_offsets = (np.arange(batch, dtype=np.int32) * length)[:, None]
        flat_start = (unit_start + row_offsets).ravel()
        bits = self._token_bits(self._row_states(keys, _STREAM_SELECT)[:, None], positions[None, :])
        # low bits = the start position, so two units of a row never tie
        score = ((bits >> self._position_bits) << self._position_bits) | positions.astype(np.uint64)
        score = score.ravel()[flat_start].reshape(batch, length)
        score[special] = np.iinfo(np.uint64).max
        flat_order = (np.argsort(score, axis=1).astype(np.int32) + row_offsets).ravel()
        maskable = (~special).ravel()[flat_order].reshape(batch, length)
        before = np.cumsum(maskable, axis=1, dtype=np.int32) - maskable
        if self.cfg.whole_word:
            unit_size = np.bincount(flat_start[~special.ravel()], minlength=batch * length).astype(np.int32)
            sorted_unit = flat_start[flat_order].reshape(batch, length)
            first = np.ones_like(maskable)
            first[:, 1:] = sorted_unit[:, 1:] != sorted_unit[:, :-1]
            before = np.maximum.accumulate(np.where(first, before, 0), axis=1)  # count before the unit
            size = unit_size[sorted_unit]
        else:
            size = 1
        chosen = np.zeros(batch * length, dtype=bool)
        chosen[flat_order] = (maskable & (before + size <= k[:, None])).ravel()
        return chosen.reshape(batch, length)

    # ------------------------------------------------------------------ replacement

    def _replace(
        self, tokens: np.ndarray, keys: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        """Input ids with [MASK] / random / original tokens at the chosen (rows, cols)."""
        bits = self._token_bits(self._row_states(keys, _STREAM_REPLACE)[rows], cols)
        # high 32 bits decide the kind, low 32 bits the random token: independent halves of one hash
        kind = (bits >> np.uint64(32)).astype(np.float64) * 2.0**-32
        pick = (bits & np.uint64(0xFFFFFFFF)) % np.uint64(len(self._replacements))
        new_ids = tokens[rows, cols]
        is_random = kind < self.cfg.mask_token_fraction + self.cfg.random_token_fraction
        new_ids = np.where(is_random, self._replacements[pick.astype(np.int64)], new_ids)
        new_ids = np.where(kind < self.cfg.mask_token_fraction, self.mask_id, new_ids)
        input_ids = tokens.copy()
        input_ids[rows, cols] = new_ids
        return input_ids

    # ------------------------------------------------------------------ the call

    def __call__(self, tokens: np.ndarray, keys: np.ndarray) -> dict[str, torch.Tensor]:
        """Mask a batch: ``tokens`` [B, L] ints, ``keys`` [B] global sample positions (see module doc)."""
        tokens = np.asarray(tokens).astype(np.int64, copy=False)
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len or len(keys) != tokens.shape[0]:
            raise PipelineError(
                f"masking expects tokens [B, {self.seq_len}] and keys [B], got {tokens.shape} and {keys.shape}"
            )
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise PipelineError(
                f"token ids outside the vocabulary of {self.vocab_size}: the shards do not match the tokenizer"
            )
        special = self._special[tokens]
        k = _round_half_up(self.cfg.probability * (~special).sum(axis=1))
        rows, cols = np.nonzero(self._select(tokens, keys, special, k))  # row-major: ascending cols
        input_ids = self._replace(tokens, keys, rows, cols)
        row_starts = np.searchsorted(rows, np.arange(tokens.shape[0]))
        slots = np.arange(len(rows)) - row_starts[rows]
        positions = np.zeros((tokens.shape[0], self.max_predictions), dtype=np.int64)
        labels = np.full((tokens.shape[0], self.max_predictions), IGNORE_INDEX, dtype=np.int64)
        positions[rows, slots] = cols
        labels[rows, slots] = tokens[rows, cols]
        attention_mask = (tokens != self.pad_id).astype(np.int64)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "mlm_positions": torch.from_numpy(positions),
            "mlm_labels": torch.from_numpy(labels),
            "num_tokens": int(attention_mask.sum()),
        }
