"""Which samples each process trains on at each step - a pure function of (step, micro-batch, rank).

The training stream is an endless sequence of global positions ``p = 0, 1, 2, ...``; position ``p``
is sample ``perm_e(p % N)`` of epoch ``e = p // N``, where ``perm_e`` is a keyed bijection of the
``N`` samples (:class:`pipeline.hashing.KeyedPermutation`, keyed by the seed and the epoch) that is
computed per position: no table of ``N`` entries is ever built, so a step's samples cost the same
O(batch) time and memory for ``N = 10**3`` and ``N = 10**10`` (a 1T-token corpus at seq 128, whose
materialised permutation would be 80 GB per process).  Optimizer step ``k`` consumes positions
``[k*G, (k+1)*G)`` with ``G = batch_size x processes x grad_accum``; micro-batch ``m`` of process
``r`` takes ``k*G + m*(batch_size*processes) + r*batch_size + [0, batch_size)``.

Consequences: resuming at step ``k`` is an O(1) seek (no replay of earlier batches, no permutation
to rebuild); no sample is seen twice within an epoch across processes; and the global batch of a
step does not depend on how it is split into processes and micro-batches.  Per-sample randomness
(MLM masks) is keyed by the global position, so it does not depend on the world size either.

Length grouping (``lengths`` given, variable-length fine-tuning data): ``perm_e`` is refined so
that each global batch holds examples of similar length - windows of ``group_window`` global
batches of the random permutation are sorted by length, cut at global-batch boundaries, and those
batches shuffled within the window (HF's ``group_by_length`` idea, but in global batches, so it
still does not depend on the process count).  Dynamic padding then pads to a near-equal length
instead of the longest of a random batch.  Still a pure function of (seed, epoch).  Grouping sorts
the epoch, so it materialises that epoch's order (O(N) memory; fine-tuning sets are small).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from pipeline.hashing import KeyedPermutation, text_key
from pipeline.train.config import global_batch_size


@dataclass(frozen=True)
class GlobalBatchPlan:
    num_samples: int
    batch_size: int  # per process, per micro-batch
    grad_accum: int
    num_processes: int
    rank: int
    seed: int
    shuffle: bool = True
    lengths: np.ndarray | None = field(default=None, compare=False, repr=False)  # -> length grouping
    group_window: int = 50  # global batches per length-sorted window
    _orders: dict = field(default_factory=dict, compare=False, repr=False, init=False)

    @property
    def global_batch(self) -> int:
        return global_batch_size(self.batch_size, self.grad_accum, self.num_processes)

    def positions(self, step: int, micro: int) -> np.ndarray:
        """Global stream positions of this process's micro-batch ``micro`` of optimizer step ``step``."""
        start = (
            step * self.global_batch
            + micro * self.batch_size * self.num_processes
            + self.rank * self.batch_size
        )
        return np.arange(start, start + self.batch_size, dtype=np.int64)

    def samples(self, positions: np.ndarray) -> np.ndarray:
        """Sample indices for global positions (vectorised; usually one epoch, at most two)."""
        epochs, offsets = np.divmod(positions, self.num_samples)
        if not self.shuffle:
            return offsets
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            if self.lengths is None:
                out[sel] = epoch_order(self.num_samples, self.seed, int(epoch))(offsets[sel])
            else:
                out[sel] = self._grouped(int(epoch))[offsets[sel]]
        return out

    def _grouped(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # an epoch and the next are all a step can touch
                self._orders.pop(min(self._orders))
            # the epoch starts mid-way through a global batch unless num_samples divides evenly:
            # its first ``head`` positions finish that batch, so groups stay aligned with steps
            head = min((-epoch * self.num_samples) % self.global_batch, self.num_samples)
            rng = np.random.default_rng([self.seed, epoch, 1])
            perm = epoch_order(self.num_samples, self.seed, epoch)(np.arange(self.num_samples))
            self._orders[epoch] = length_grouped(
                perm, np.asarray(self.lengths), head, self.global_batch, self.group_window, rng
            )
        return self._orders[epoch]

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.num_samples


@lru_cache(maxsize=8)
def epoch_order(num_samples: int, seed: int, epoch: int) -> KeyedPermutation:
    """The sample order of one epoch: position in the epoch -> sample index, per position."""
    return KeyedPermutation(num_samples, text_key("epoch order", seed, epoch))


def length_grouped(
    perm: np.ndarray, lengths: np.ndarray, head: int, group: int, window_groups: int, rng
) -> np.ndarray:
    """``perm`` reordered so that consecutive runs of ``group`` samples (after the first ``head``)
    have similar lengths; the groups' order is shuffled within each window (see the module doc)."""

    def by_length(idx: np.ndarray) -> np.ndarray:  # longest first; ties keep the random order
        return idx[np.argsort(-lengths[idx], kind="stable")]

    parts = [by_length(perm[:head])]
    body = perm[head:]
    window = group * window_groups
    for start in range(0, len(body), window):
        chunk = by_length(body[start : start + window])
        full = len(chunk) // group
        groups = chunk[: full * group].reshape(full, group)[rng.permutation(full)]
        parts += [groups.reshape(-1), chunk[full * group :]]  # a short last group stays last
    return np.concatenate(parts)


def micro_batch_stream(
    make_batch: Callable[[int, int], dict], start_step: int, grad_accum: int, prefetch: int
) -> Iterator[dict]:
    """Yield ``make_batch(step, micro)`` for step >= start_step in order, built ahead by a thread.

    The thread keeps data preparation (memmap reads, masking, padding) off the training step's
    critical path; exceptions in it are re-raised in the consumer.
    """
    if prefetch <= 0:
        step = start_step
        while True:
            for micro in range(grad_accum):
                yield make_batch(step, micro)
            step += 1
    out: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        step = start_step
        try:
            while not stop.is_set():
                for micro in range(grad_accum):
                    item = make_batch(step, micro)
                    while not stop.is_set():
                        try:
                            out.put(("ok", item), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                step += 1
        except BaseException as e:  # surface data errors in the training thread
            out.put(("error", e))

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = out.get()
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def eval_batches(num_samples: int, batch_size: int, num_processes: int, rank: int, max_batches: int = 0):
    """This process's share of an evaluation set, as ``(indices, valid)`` batches.

    Every process gets the same number of equally sized batches (FSDP / ZeRO-3 run collectives
    inside forward, so all processes must call it equally often); slots past the end of the set
    repeat index 0 with ``valid=False`` and must be given zero weight by the caller.
    """
    per_process = -(-num_samples // num_processes)
    num_batches = -(-per_process // batch_size)
    if max_batches > 0:
        num_batches = min(num_batches, max_batches)
    order = np.arange(num_batches * batch_size * num_processes, dtype=np.int64)
    mine = order.reshape(num_batches, num_processes, batch_size)[
        :, rank
    ]  # interleave: batch b of every process
    valid = mine < num_samples
    return [(np.where(v, idx, 0), v) for idx, v in zip(mine, valid)]
