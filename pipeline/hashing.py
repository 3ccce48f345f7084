"""Counter-based hashes: randomness that is a pure function of its inputs (no RNG state).

Used by MLM masking (which tokens of a row are predicted, keyed by the row's global position) and
by shard encoding (which documents go to validation, keyed by file and document index), so the
result never depends on how the work is split across processes, batches or resumes::

    key = text_key(seed, "train.txt")                  # 64-bit key of some identifying values
    bits = keyed_hash(key, np.arange(n, dtype=np.uint64))  # uint64 per counter
    uniform = unit_float(bits)                         # in [0, 1)

``splitmix64`` is the finaliser of Steele, Lea and Flood's SplitMix64 generator; ``keyed_hash`` is
SplitMix64's n-th output for a given state (``key + n * GOLDEN``).  :class:`KeyedPermutation`
builds a keyed bijection of ``[0, n)`` from it, evaluated per index (the training sample order)::

    order = KeyedPermutation(10**10, key)              # no O(n) table, ever
    samples = order(np.arange(1000, 1032))             # positions -> sample indices
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["GOLDEN", "KeyedPermutation", "keyed_hash", "splitmix64", "text_key", "unit_float"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (2^64 / golden ratio)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic is the point)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MUL1
        x = (x ^ (x >> np.uint64(27))) * _MUL2
    return x ^ (x >> np.uint64(31))


def keyed_hash(key: np.ndarray | np.uint64 | int, counters: np.ndarray) -> np.ndarray:
    """uint64 hash of (key, counter) for each counter; broadcasts like ``key + counters``."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(key, dtype=np.uint64) + counters.astype(np.uint64) * GOLDEN)


def unit_float(bits: np.ndarray) -> np.ndarray:
    """The top 53 bits of uint64 hashes as floats, uniform in [0, 1)."""
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def text_key(*parts: object) -> int:
    """A 64-bit key of ``parts`` (their ``str``, NUL-separated; blake2b): stable across runs and machines."""
    text = "\0".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class KeyedPermutation:
    """A pseudo-random permutation of ``[0, n)`` keyed by a 64-bit ``key``, evaluated per index.

    ``perm(indices)`` maps any array of indices in O(1) time and memory each: nothing of size ``n``
    is ever built, so ``n = 10**10`` costs what ``n = 10`` does.  It is a balanced Feistel network
    (``ROUNDS`` rounds, round function ``keyed_hash`` of the round key and the right half) on the
    smallest even number of bits that covers ``n``, with cycle walking: an output ``>= n`` is
    encrypted again until it lands in ``[0, n)``, which keeps it a bijection of ``[0, n)``.  The
    domain is under ``4n``, so a walk takes fewer than 4 encryptions on average."""

    ROUNDS = 6

    def __init__(self, n: int, key: int) -> None:
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        self.n = n
        self.half = np.uint64(((max(2, (n - 1).bit_length())) + 1) // 2)
        self.mask = np.uint64((1 << int(self.half)) - 1)
        with np.errstate(over="ignore"):
            steps = np.arange(1, self.ROUNDS + 1, dtype=np.uint64) * GOLDEN
            self.round_keys = splitmix64(np.uint64(key % 2**64) + steps)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        x = np.asarray(indices, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise IndexError(f"indices must be in [0, {self.n})")
        y = self._encrypt(x.astype(np.uint64))
        outside = np.flatnonzero(y >= self.n)
        while outside.size:
            y[outside] = self._encrypt(y[outside])
            outside = outside[y[outside] >= self.n]
        return y.astype(np.int64)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for round_key in self.round_keys:
            left, right = right, left ^ (keyed_hash(round_key, right) & self.mask)
        return (left << self.half) | right
