"""Tests of pipeline/hashing.py's KeyedPermutation (the training sample order): a bijection of
[0, n) for every n, uniform positions, no structure between consecutive indices, pure, and
evaluated per index at any n.  Statistical checks use fixed keys and chi-square bounds at the
99.9% quantile, so they are deterministic and fail only when the shuffle has structure.

Run: ``python -m pytest tests/test_hashing.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.hashing import KeyedPermutation


def _chi2_bound(dof: int) -> float:
    return float(stats.chi2.ppf(0.999, dof))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 100, 1000, 4097, 65536, 100_003])
def test_it_is_a_permutation_of_every_size(n):
    for key in (0, 1, 2**64 - 1):
        perm = KeyedPermutation(n, key)
        assert np.array_equal(np.sort(perm(np.arange(n))), np.arange(n))
        assert n <= 2 ** (2 * int(perm.half)) < max(4 * n, 16)  # cycle walks stay short


@pytest.mark.parametrize("n", [7, 10, 16])
def test_each_index_lands_anywhere_with_equal_probability(n):
    """Over many keys, index i maps to each value j equally often (each row of the table)."""
    keys = 150 * n
    table = np.zeros((n, n))
    for key in range(keys):
        table[np.arange(n), KeyedPermutation(n, key)(np.arange(n))] += 1
    expected = keys / n
    statistic = ((table - expected) ** 2 / expected).sum()
    assert statistic < _chi2_bound(n * (n - 1))


def test_consecutive_indices_are_independent_across_keys():
    """The pair (perm(0), perm(1)) is uniform over the n(n-1) ordered pairs of distinct values."""
    n, keys = 10, 9_000
    pairs = np.zeros((n, n))
    for key in range(keys):
        a, b = KeyedPermutation(n, key)(np.array([0, 1]))
        pairs[a, b] += 1
    off_diagonal = pairs[~np.eye(n, dtype=bool)]
    assert pairs.trace() == 0
    expected = keys / (n * (n - 1))
    assert ((off_diagonal - expected) ** 2 / expected).sum() < _chi2_bound(n * (n - 1) - 1)


def test_one_large_permutation_has_no_structure():
    n = 100_003
    perm = KeyedPermutation(n, 42)(np.arange(n)).astype(np.float64)
    bound = 4 / np.sqrt(n)
    assert abs(np.corrcoef(perm[:-1], perm[1:])[0, 1]) < bound  # serial correlation
    assert abs(np.corrcoef(np.arange(n), perm)[0, 1]) < bound  # no trend through the epoch
    steps = np.mod(np.diff(perm), n)  # gaps between consecutive values: uniform
    counts = np.histogram(steps, bins=20, range=(0, n))[0]
    assert stats.chisquare(counts).statistic < _chi2_bound(19)
    table = np.histogram2d(np.arange(n), perm, bins=10)[0]  # position decile x value decile
    assert stats.chi2_contingency(table).statistic < _chi2_bound(81)
    other = KeyedPermutation(n, 43)(np.arange(n)).astype(np.float64)  # the next epoch's key
    assert abs(np.corrcoef(perm, other)[0, 1]) < bound
    assert (perm == other).sum() < 10  # about one fixed point expected


def test_it_is_a_pure_function_of_n_key_and_index():
    n = 10_000
    perm = KeyedPermutation(n, 7)
    whole = perm(np.arange(n))
    shuffled = np.random.default_rng(0).permutation(n)
    assert np.array_equal(perm(shuffled), whole[shuffled])  # any order, any chunking
    assert np.array_equal(KeyedPermutation(n, 7)(np.arange(100, 200)), whole[100:200])
    assert not np.array_equal(KeyedPermutation(n, 8)(np.arange(n)), whole)
    with pytest.raises(IndexError):
        perm(np.array([n]))
    with pytest.raises(ValueError):
        KeyedPermutation(0, 7)


@pytest.mark.parametrize("n", [10**10, 2**62 + 3])
def test_huge_n_is_evaluated_per_index(n):
    perm = KeyedPermutation(n, 3)
    positions = np.arange(10**8, 10**8 + 4096, dtype=np.int64)
    values = perm(positions)
    assert values.dtype == np.int64 and values.min() >= 0 and values.max() < n
    assert len(np.unique(values)) == len(values)
    assert values.max() > n // 2  # spread over the whole range, not near the positions
    assert np.array_equal(perm(positions[::-1]), values[::-1])
