"""Counter-based hashes: randomness that is a pure function of its inputs (no RNG state).

Used by MLM masking (which tokens of a row are predicted, keyed by the row's global position) and
by shard encoding (which documents go to validation, keyed by file and document index), so the
result never depends on how the work is split across processes, batches or resumes::

    key = text_key(seed, "train.txt")                  # 64-bit key of some identifying values
    bits = keyed_hash(key, np.arange(n, dtype=np.uint64))  # uint64 per counter
    uniform = unit_float(bits)                         # in [0, 1)

``splitmix64`` is the finaliser of Steele, Lea and Flood's SplitMix64 generator; ``keyed_hash`` is
SplitMix64's n-th output for a given state (``key + n * GOLDEN``).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["GOLDEN", "keyed_hash", "splitmix64", "text_key", "unit_float"]

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
