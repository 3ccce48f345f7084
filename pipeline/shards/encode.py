"""Encoding side of ``pipeline shard``: tokenize this worker's input files into work units.

Called by :func:`pipeline.shards.build.build_shards`; the unit layout and resume rules are in
:mod:`pipeline.shards.plan`.  Documents are streamed from :mod:`pipeline.text.corpus`, tokenized in
batches of ``batch_size`` by the Rust encoder (no special tokens, no offsets) spread
over ``num_proc`` spawned processes, split train/validation by a hash of (seed, file name,
document index), and appended to the current unit.  At most ``2 * num_proc`` batches are in
flight, so memory stays flat whatever the corpus size.  With ``num_proc=1`` everything runs in
this process (the Rust encoder may still use threads unless TOKENIZERS_PARALLELISM=false).
The ids come from :class:`pipeline.text.IdEncoder`: exactly ``encode_batch_fast``'s, with each
distinct word of a batch encoded once where the tokenizer allows it (``fast_encode``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.hashing import keyed_hash, text_key, unit_float
from pipeline.shards.format import DTYPES
from pipeline.shards.plan import (
    Encoded,
    Plan,
    UnitWriter,
    file_marker,
    source_name,
    unit_record,
    write_file_marker,
)
from pipeline.text import IdEncoder, iter_documents


def split_key(seed: int, name: str) -> int:
    """The hash key of one input file's documents: (seed, the file's base name)."""
    return text_key(seed, name)


def validation_mask(key: int, first_index: int, count: int, val_fraction: float) -> np.ndarray:
    """Which of documents ``first_index .. first_index+count-1`` of a file go to validation
    (splitmix64 of the file key and the document index, compared with ``val_fraction``)."""
    if val_fraction <= 0:
        return np.zeros(count, dtype=bool)
    bits = keyed_hash(key, np.arange(first_index, first_index + count, dtype=np.uint64))
    return unit_float(bits) < val_fraction


# ----------------------------------------------------------------------------- encoding

_ENCODER: IdEncoder | None = None  # the encoder of this process (set by _init_encoder)


def _init_encoder(tokenizer_json: str, single_thread: bool, by_words: bool) -> None:
    global _ENCODER
    if single_thread:  # pool workers: parallelism comes from the processes
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _ENCODER = IdEncoder(tokenizer_json, by_words=by_words)


@dataclass
class EncodeTask:
    texts: list[str]
    first_index: int  # index of texts[0] among its file's documents
    split_key: int
    val_fraction: float
    sep_id: int
    dtype: str


def encode_task(task: EncodeTask) -> Encoded:
    flat, lengths = _ENCODER.encode(task.texts)
    dtype = DTYPES[task.dtype]
    is_val = validation_mask(task.split_key, task.first_index, len(lengths), task.val_fraction)
    doc_of_token = np.repeat(np.arange(len(lengths)), lengths)
    streams, documents = {}, {}
    for split, selected in (("train", ~is_val), ("validation", is_val)):
        selected = selected & (lengths > 0)  # a document that tokenizes to nothing is dropped
        tokens = flat[selected[doc_of_token]].astype(dtype, copy=False)
        streams[split] = np.insert(tokens, np.cumsum(lengths[selected]), task.sep_id).astype(
            dtype, copy=False
        )
        documents[split] = int(selected.sum())
    return Encoded(streams, documents, len(lengths))


@dataclass
class _Item:
    """One step of the encode plan, consumed in order: a batch, or the end of a unit/file."""

    kind: str  # "batch" | "unit_done" | "unit_reused" | "file_done" | "file_reused"
    file_index: int
    chunk: int
    task: EncodeTask | None = None
    documents: int = 0


_BATCH_CHARS = 1 << 23  # a batch also ends at this many characters: long documents keep memory flat


def _batches(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) == size or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _file_items(plan: Plan, file_index: int) -> Iterator[_Item]:
    """The encode plan of one file; complete, checksum-valid units are skipped (resume)."""
    marker = file_marker(plan, file_index)
    if marker and all(unit_record(plan, file_index, c, True) for c in range(marker["chunks"])):
        yield _Item("file_reused", file_index, marker["chunks"], documents=marker["documents_read"])
        return
    cfg, source = plan.cfg, plan.sources[file_index]
    docs = iter_documents(source, cfg.corpus)
    key, index, chunk = split_key(cfg.seed, source_name(source)), 0, 0
    while (first := next(docs, None)) is not None:
        unit_docs = itertools.chain([first], itertools.islice(docs, cfg.docs_per_unit - 1))
        if unit_record(plan, file_index, chunk, True):
            skipped = sum(1 for _ in unit_docs)
            yield _Item("unit_reused", file_index, chunk, documents=skipped)
            index += skipped
        else:
            for texts in _batches(unit_docs, cfg.batch_size):
                task = EncodeTask(
                    texts,
                    index,
                    key,
                    cfg.val_fraction,
                    plan.tokenizer.special_ids["sep_id"],
                    plan.tokenizer.dtype,
                )
                yield _Item("batch", file_index, chunk, task=task)
                index += len(texts)
            yield _Item("unit_done", file_index, chunk)
        chunk += 1
    yield _Item("file_done", file_index, chunk, documents=index)


@contextmanager
def _encoder_pool(plan: Plan):
    if plan.num_proc <= 1:
        _init_encoder(plan.tokenizer.backend_json, single_thread=False, by_words=plan.cfg.fast_encode)
        yield None
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process with tokenizer threads
    init = (plan.tokenizer.backend_json, True, plan.cfg.fast_encode)
    with context.Pool(plan.num_proc, _init_encoder, init) as pool:
        yield pool


def _in_order(pool: Any, items: Iterator[_Item], window: int) -> Iterator[tuple[_Item, Encoded | None]]:
    """Encode the batch items (in ``pool`` if any), yielding every item in order with its result;
    at most ``window`` items are in flight, so memory does not grow with the corpus."""
    pending: deque[tuple[_Item, Any]] = deque()
    for item in items:
        result = None
        if item.task is not None:
            result = pool.apply_async(encode_task, (item.task,)) if pool else encode_task(item.task)
        pending.append((item, result))
        while len(pending) > window:
            yield _resolved(*pending.popleft())
    while pending:
        yield _resolved(*pending.popleft())


def _resolved(item: _Item, result: Any) -> tuple[_Item, Encoded | None]:
    return item, (result.get() if hasattr(result, "get") else result)


def encode_parts(plan: Plan, progress: Any) -> dict[str, int]:
    """Encode this worker's files into units, reusing valid ones; returns the units encoded / reused.
    ``progress`` is a tqdm-like bar updated with documents read."""
    plan.units_dir.mkdir(parents=True, exist_ok=True)
    counts = {"units_encoded": 0, "units_reused": 0}
    writers: dict[tuple[int, int], UnitWriter] = {}
    items = itertools.chain.from_iterable(_file_items(plan, index) for index in plan.mine)
    try:
        with _encoder_pool(plan) as pool:
            for item, encoded in _in_order(pool, items, window=2 * plan.num_proc):
                unit = (item.file_index, item.chunk)
                if item.kind == "batch":
                    if unit not in writers:
                        writers[unit] = UnitWriter(plan, *unit)
                    writers[unit].add(encoded)
                    progress.update(encoded.documents_read)
                elif item.kind == "unit_done":
                    writers[unit].commit()
                    del writers[unit]  # only once committed: a failed commit is still aborted below
                    counts["units_encoded"] += 1
                elif item.kind in ("unit_reused", "file_reused"):
                    progress.update(item.documents)
                    counts["units_reused"] += 1 if item.kind == "unit_reused" else item.chunk
                else:
                    write_file_marker(plan, item.file_index, chunks=item.chunk, documents=item.documents)
    finally:
        for writer in writers.values():  # an interrupted unit leaves no temp files behind
            writer.abort()
    return counts
