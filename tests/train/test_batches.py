"""GlobalBatchPlan: which samples each step trains on, with and without length grouping."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.batches import GlobalBatchPlan, length_grouped


def _plan(n, batch_size=4, grad_accum=1, processes=1, rank=0, seed=0, lengths=None, **kw):
    return GlobalBatchPlan(n, batch_size, grad_accum, processes, rank, seed, lengths=lengths, **kw)


def _global_batch(plans: list[GlobalBatchPlan], step: int) -> list[int]:
    """Every sample of optimizer step ``step`` over all processes and micro-batches, in order."""
    out = []
    for micro in range(plans[0].grad_accum):
        for plan in plans:  # rank order: positions interleave rank by rank within a micro-batch
            out += plan.samples(plan.positions(step, micro)).tolist()
    return out


def _skewed_lengths(n: int, seed: int = 1) -> np.ndarray:
    """Short texts with a long tail, like SST-2 / CoNLL sentences."""
    return np.clip(np.random.default_rng(seed).lognormal(3.0, 0.6, n).astype(int), 3, 128)


@pytest.mark.parametrize("grouped", [False, True])
def test_every_epoch_visits_each_sample_once(grouped):
    n, plan = 103, None
    plan = _plan(n, batch_size=8, lengths=_skewed_lengths(n) if grouped else None)
    for epoch in range(3):
        positions = np.arange(epoch * n, (epoch + 1) * n)
        assert sorted(plan.samples(positions).tolist()) == list(range(n))


@pytest.mark.parametrize("grouped", [False, True])
def test_global_batch_does_not_depend_on_the_process_split(grouped):
    n = 237
    lengths = _skewed_lengths(n) if grouped else None
    one = [_plan(n, batch_size=8, lengths=lengths)]
    split = [_plan(n, batch_size=2, grad_accum=2, processes=2, rank=r, lengths=lengths) for r in range(2)]
    for step in range(0, 120, 7):  # crosses several epoch boundaries (n is not a multiple of 8)
        assert sorted(_global_batch(one, step)) == sorted(_global_batch(split, step))


def test_grouping_is_a_pure_function_of_seed_and_epoch():
    n, lengths = 500, _skewed_lengths(500)
    a, b = _plan(n, lengths=lengths), _plan(n, lengths=lengths)
    far = np.arange(10 * n, 10 * n + 64)
    assert a.samples(far).tolist() == b.samples(far).tolist()  # a resumed run seeks straight there
    assert a.samples(np.arange(64)).tolist() == b.samples(np.arange(64)).tolist()
    other_seed = _plan(n, seed=1, lengths=lengths)
    assert other_seed.samples(np.arange(64)).tolist() != a.samples(np.arange(64)).tolist()


def _padded_tokens(plan: GlobalBatchPlan, lengths: np.ndarray, steps: int) -> int:
    """Tokens after dynamic padding to the longest example of each micro-batch."""
    total = 0
    for step in range(steps):
        for micro in range(plan.grad_accum):
            total += plan.batch_size * int(lengths[plan.samples(plan.positions(step, micro))].max())
    return total


def test_grouping_cuts_padding_in_every_epoch():
    n, batch = 1000, 16
    lengths = _skewed_lengths(n)
    steps = 3 * n // batch  # three epochs: later epochs start mid-way through a global batch
    random = _padded_tokens(_plan(n, batch_size=batch), lengths, steps)
    grouped_plan = _plan(n, batch_size=batch, lengths=lengths)
    grouped = _padded_tokens(grouped_plan, lengths, steps)
    real = int(lengths.sum()) * 3
    assert random > 1.8 * real  # the problem: random batches pad a lot
    assert grouped < 1.15 * real  # grouped batches barely pad
    # alignment with optimizer steps holds in the later epochs too (not only the first)
    epoch3 = range(2 * n // batch + 1, steps)
    spread = [np.ptp(lengths[grouped_plan.samples(grouped_plan.positions(s, 0))]) for s in epoch3]
    assert np.median(spread) <= 2


def test_grouped_batches_come_in_random_order():
    """Not sorted longest-first through the epoch: the loss would see a length curriculum."""
    n, batch = 2000, 8
    lengths = _skewed_lengths(n)
    plan = _plan(n, batch_size=batch, lengths=lengths, group_window=50)
    means = [lengths[plan.samples(plan.positions(s, 0))].mean() for s in range(n // batch)]
    first_window = means[:50]
    assert not all(a >= b for a, b in zip(first_window, first_window[1:]))
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.2  # no trend over the epoch


def test_length_grouped_keeps_the_head_and_a_short_last_group_in_place():
    perm = np.arange(10)
    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 0])
    out = length_grouped(perm, lengths, head=2, group=3, window_groups=10, rng=np.random.default_rng(0))
    assert sorted(out.tolist()) == list(range(10))
    assert out[:2].tolist() == [0, 1]  # the head finishes the previous epoch's global batch
    groups = [sorted(lengths[out[i : i + 3]].tolist(), reverse=True) for i in (2, 5)]
    assert sorted(groups) == sorted([[9, 8, 7], [6, 4, 3]])  # sorted body, cut into full groups
    assert lengths[out[8:]].tolist() == [2, 0]  # the short remainder stays last


def test_epochs_and_seeds_give_unrelated_orders():
    n = 5000
    plan, other_seed = _plan(n), _plan(n, seed=1)
    first, second = plan.samples(np.arange(n)), plan.samples(np.arange(n, 2 * n))
    for a, b in ((first, second), (first, other_seed.samples(np.arange(n)))):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.06 and (a == b).sum() < 10


def test_a_step_of_ten_billion_samples_is_computed_not_materialised():
    n, step = 10**10, 10**8
    single = [_plan(n, batch_size=32)]
    split = [_plan(n, batch_size=8, grad_accum=2, processes=2, rank=r) for r in range(2)]
    batch = _global_batch(single, step)
    assert sorted(batch) == sorted(_global_batch(split, step))  # any world size: the same samples
    assert len(set(batch)) == 32 and 0 <= min(batch) and max(batch) < n
    assert max(batch) > n // 2  # drawn from the whole range, not near the positions
    assert _global_batch(single, step) == batch  # a pure function: a resume seeks straight there
