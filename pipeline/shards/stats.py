"""Token statistics of a split: unigram entropy and the most frequent token's share.

Counted while packing (:mod:`pipeline.shards.merge` feeds every piece of a split's token stream to
a :class:`TokenCounter`) and stored in ``manifest.json`` (definitions in
:mod:`pipeline.shards.format`).  For sets written before the manifest had them, the pretrain stage
(or anyone) calls :func:`token_statistics`, which estimates them from a bounded, evenly spread
sample of the split's sequences::

    stats = token_statistics("runs/shards/wikitext2_128", "train")
    stats["unigram_entropy"], stats["top_token_fraction"], stats["source"]   # "manifest" | "sample"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.shards.reader import ShardReader

__all__ = ["STAT_KEYS", "TokenCounter", "token_statistics"]

STAT_KEYS = ("unigram_entropy", "top_token_fraction")
_DIGITS = 9  # rounded, so that a manifest does not depend on the last bit of a libm log
_ROWS_PER_READ = 4096


class TokenCounter:
    """``add(tokens)`` over any pieces, then ``statistics()``: special ids are not counted."""

    def __init__(self, vocab_size: int, special_ids: list[int | None]) -> None:
        self.counts = np.zeros(vocab_size, dtype=np.int64)
        self.special = sorted({i for i in special_ids if i is not None and 0 <= i < vocab_size})

    def add(self, tokens: np.ndarray) -> None:
        if tokens.size:
            self.counts += np.bincount(tokens, minlength=self.counts.size)

    def statistics(self) -> dict[str, float | None]:
        counts = self.counts.copy()
        counts[self.special] = 0
        total = int(counts.sum())
        if total == 0:
            return dict.fromkeys(STAT_KEYS)
        p = counts[counts > 0] / total
        return {
            "unigram_entropy": round(float(-(p * np.log(p)).sum()), _DIGITS),
            "top_token_fraction": round(int(counts.max()) / total, _DIGITS),
        }


def token_statistics(shards: str | Path, split: str = "train", max_tokens: int = 1 << 24) -> dict[str, Any]:
    """The split's ``unigram_entropy`` and ``top_token_fraction``: from the manifest when it has
    them (``source="manifest"``), else counted over at most ``max_tokens`` tokens of sequences
    spread evenly over the split (``source="sample"``; exact when the sample is the whole split,
    and a plug-in entropy that reads slightly low otherwise).  ``tokens`` is how many were counted."""
    reader = ShardReader(shards, split)
    info = reader.manifest["splits"][split]
    if all(key in info for key in STAT_KEYS):
        return {**{key: info[key] for key in STAT_KEYS}, "source": "manifest", "tokens": None}
    rows = min(len(reader), max(1, max_tokens // reader.seq_len))
    counter = TokenCounter(reader.vocab_size, list(reader.special_ids.values()))
    picks = np.unique(np.linspace(0, len(reader) - 1, rows).round().astype(np.int64)) if rows else []
    for start in range(0, len(picks), _ROWS_PER_READ):
        counter.add(reader.take(picks[start : start + _ROWS_PER_READ]).reshape(-1))
    counted = int(counter.counts.sum()) - int(counter.counts[counter.special].sum())
    return {**counter.statistics(), "source": "sample", "tokens": counted}
