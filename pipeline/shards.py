"""Packed token shards: the on-disk format and :class:`ShardReader`, the pretraining data path.

A shard set is written by ``pipeline shard --config configs/shard/wikitext2.yaml`` (the work is in
``pipeline/shard_writer.py`` and ``pipeline/shard_merge.py``) and read with
``ShardReader(output_dir, split="train")``.  Layout of ``output_dir``::

    manifest.json          format version, seq_len, dtype, tokenizer hash + special ids, per split:
                           shard files (name, sequences, sha256) and totals; the content config
    train-00000.bin ...    raw little-endian uint16 (vocab <= 65535) or uint32 token ids,
    validation-00000.bin   C order [num_sequences, seq_len]
    tokenizer/             a copy of the tokenizer, so the set is self-contained
    config.yaml            the resolved stage config

Packing rule.  The documents of a split, in input order (files in sorted order, documents in file
order), are concatenated into one stream with a single [SEP] *between* consecutive documents:
``d1 [SEP] d2 [SEP] d3``.  The stream is cut into bodies of ``seq_len - 2`` tokens and every
sequence is ``[CLS] body [SEP]``, so documents continue across sequence boundaries (no tokens are
wasted on padding except in the very last sequence of a split, which is ``[CLS] rest [SEP]``
followed by [PAD]).  A document boundary that falls on a sequence edge gives ``[CLS] [SEP] ...``
or ``... [SEP] [SEP]``; this is harmless for MLM and keeps the rule simple.  Hence, per split,
``num_tokens = stream_length + 2 * num_sequences`` and ``num_sequences = ceil(stream_length /
(seq_len - 2))``, where ``stream_length = sum(document tokens) + num_documents - 1``.

Split rule.  A document goes to validation when a 64-bit hash of (seed, its file's base name, its
index among the file's documents) falls below ``val_fraction``: deterministic, and independent of
the number of workers, processes and work units.  Documents that tokenize to nothing are dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io import sha256_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SPLITS",
    "Packer",
    "ShardFileWriter",
    "ShardReader",
    "dtype_for_vocab",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_DIRNAME = "tokenizer"
SPLITS = ("train", "validation")
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SPECIAL_KEYS = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")


def dtype_for_vocab(vocab_size: int) -> str:
    """Name of the narrowest token dtype for ids in ``[0, vocab_size)``."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def shard_file_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def read_manifest(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(shard directory, manifest) for a shard directory or its ``manifest.json``."""
    path = Path(path)
    file = path if path.name == MANIFEST_NAME or path.is_file() else path / MANIFEST_NAME
    if not file.is_file():
        raise PipelineError(f"no shard set at {path}: {file} not found (create one with `pipeline shard`)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{file} is not valid JSON ({e}): the shard set is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise PipelineError(
            f"{file}: unknown shard format_version {version!r} (this pipeline reads {FORMAT_VERSION})"
        )
    return file.parent, manifest


# ----------------------------------------------------------------------------- reading


class ShardReader:
    """Random access to the sequences of one split of a shard set, backed by ``np.memmap``.

    ``reader[i]`` is row ``i`` (``[seq_len]``, the shard's dtype, read-only, O(1));
    ``reader.take(indices)`` gathers rows from any shards into one ``[n, seq_len]`` int64 array.
    Opening checks the manifest, the dtype and every shard's size (``verify=True`` also checks
    every shard's sha256) and that the bundled tokenizer matches the manifest's hash.
    Picklable (memory maps are reopened lazily), so DataLoader workers can share one."""

    def __init__(self, path: str | Path, split: str = "train", verify: bool = False) -> None:
        self.root, self.manifest = read_manifest(path)
        self.split = split
        self.seq_len, self.dtype = self._layout()
        tokenizer = self.manifest.get("tokenizer") or {}
        self.vocab_size = int(tokenizer.get("vocab_size", 0))
        self.special_ids = {key: tokenizer.get(key) for key in SPECIAL_KEYS}
        self.tokenizer_dir = self.root / str(tokenizer.get("dir", TOKENIZER_DIRNAME))
        self._check_tokenizer(tokenizer.get("sha256"))
        shards = self._split_info()["shards"]
        self._files = [self.root / s["file"] for s in shards]
        counts = [int(s["num_sequences"]) for s in shards]
        for file, count, shard in zip(self._files, counts, shards):
            self._check_shard(file, count, shard.get("sha256") if verify else None)
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._maps: list[np.memmap | None] = [None] * len(self._files)

    # ------------------------------------------------------------------ validation on open

    def _layout(self) -> tuple[int, np.dtype]:
        seq_len, dtype = self.manifest.get("seq_len"), self.manifest.get("dtype")
        if dtype not in DTYPES:
            raise PipelineError(
                f"{self.root / MANIFEST_NAME}: unknown dtype {dtype!r} (known: {list(DTYPES)})"
            )
        if not isinstance(seq_len, int) or seq_len < 2:
            raise PipelineError(f"{self.root / MANIFEST_NAME}: invalid seq_len {seq_len!r}")
        return seq_len, DTYPES[dtype]

    def _split_info(self) -> dict[str, Any]:
        splits = self.manifest.get("splits") or {}
        if self.split not in splits:
            raise PipelineError(
                f"shard set {self.root} has no split {self.split!r} (available: {', '.join(splits) or 'none'})"
            )
        return splits[self.split]

    def _check_tokenizer(self, expected: str | None) -> None:
        file = self.tokenizer_dir / "tokenizer.json"
        if not file.is_file():
            raise PipelineError(f"shard set {self.root}: tokenizer copy missing ({file})")
        if expected and sha256_file(file) != expected:
            raise PipelineError(
                f"{file} does not match the sha256 in {self.root / MANIFEST_NAME}: "
                "the tokenizer was changed after sharding; re-shard with the new tokenizer"
            )

    def _check_shard(self, file: Path, count: int, sha256: str | None) -> None:
        if not file.is_file():
            raise PipelineError(f"shard file missing: {file} (listed in {self.root / MANIFEST_NAME})")
        expected = count * self.seq_len * self.dtype.itemsize
        size = file.stat().st_size
        if size != expected:
            raise PipelineError(
                f"shard file {file} is truncated or corrupted: {size} bytes, expected {expected} "
                f"({count} sequences x {self.seq_len} x {self.dtype.itemsize} bytes); re-run `pipeline shard`"
            )
        if sha256 and sha256_file(file) != sha256:
            raise PipelineError(
                f"shard file {file} is truncated or corrupted: sha256 mismatch; re-run `pipeline shard`"
            )

    def check_compatible(self, vocab_size: int | None = None, max_positions: int | None = None) -> None:
        """Raise PipelineError if a model with this vocab / position table cannot train on the set."""
        if vocab_size is not None and vocab_size < self.vocab_size:
            raise PipelineError(
                f"model vocab_size {vocab_size} is smaller than the shard set's tokenizer vocab "
                f"{self.vocab_size} ({self.root}): build the model from {self.tokenizer_dir}"
            )
        if max_positions is not None and max_positions < self.seq_len:
            raise PipelineError(
                f"shard seq_len {self.seq_len} ({self.root}) exceeds the model's {max_positions} positions"
            )

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the split, from the manifest."""
        return int(self._split_info().get("num_tokens", 0))

    def _map(self, shard: int) -> np.memmap:
        mapped = self._maps[shard]
        if mapped is None:
            rows = int(self._starts[shard + 1] - self._starts[shard])
            mapped = np.memmap(self._files[shard], dtype=self.dtype, mode="r", shape=(rows, self.seq_len))
            self._maps[shard] = mapped
        return mapped

    def __getitem__(self, index: int) -> np.ndarray:
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"sequence index {index} out of range for {n} sequences")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._map(shard)[i - int(self._starts[shard])]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (any order, repeats allowed) as a new ``[n, seq_len]`` int64 array."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"sequence indices out of range for {n} sequences")
        out = np.empty((idx.size, self.seq_len), dtype=np.int64)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        order = np.argsort(shard_of, kind="stable")  # one fancy-index read per shard touched
        present, first = np.unique(shard_of[order], return_index=True)
        ends = np.append(first[1:], idx.size)
        for shard, begin, end in zip(present.tolist(), first.tolist(), ends.tolist()):
            group = order[begin:end]
            out[group] = self._map(shard)[idx[group] - self._starts[shard]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = [None] * len(self._files)  # a memmap would pickle as a full copy
        return state

    def __repr__(self) -> str:
        return f"ShardReader({str(self.root)!r}, split={self.split!r}, sequences={len(self)}, seq_len={self.seq_len})"


# ----------------------------------------------------------------------------- writing


class Packer:
    """Cuts the stream ``d1 [SEP] d2 [SEP] ... dn [SEP]`` into ``[CLS] body [SEP]`` rows; the final
    [SEP] is dropped and the last row is padded (the rule in :mod:`pipeline.shards`)."""

    def __init__(
        self, seq_len: int, ids: dict[str, Any], dtype: np.dtype, emit: Callable[[np.ndarray], None]
    ):
        self.seq_len, self.body, self.ids, self.dtype, self.emit = seq_len, seq_len - 2, ids, dtype, emit
        self.carry = np.empty(0, dtype=dtype)
        self.real_tokens = 0

    def feed(self, tokens: np.ndarray) -> None:
        if not tokens.size:
            return
        buffer = np.concatenate([self.carry, tokens]) if self.carry.size else tokens
        # keep at least one token back: the stream's very last token is the [SEP] that is dropped
        full = (buffer.size - 1) // self.body
        if full:
            self._emit(buffer[: full * self.body].reshape(full, self.body))
        self.carry = buffer[full * self.body :].copy()

    def finish(self) -> None:
        rest = self.carry[:-1]
        if rest.size:
            row = np.full((1, self.seq_len), self.ids["pad_id"], dtype=self.dtype)
            row[0, 1 : 1 + rest.size] = rest
            row[0, 0], row[0, 1 + rest.size] = self.ids["cls_id"], self.ids["sep_id"]
            self.real_tokens += rest.size + 2
            self.emit(row)
        self.carry = np.empty(0, dtype=self.dtype)

    def _emit(self, bodies: np.ndarray) -> None:
        rows = np.empty((len(bodies), self.seq_len), dtype=self.dtype)
        rows[:, 0], rows[:, 1:-1], rows[:, -1] = self.ids["cls_id"], bodies, self.ids["sep_id"]
        self.real_tokens += rows.size
        self.emit(rows)


class ShardFileWriter:
    """Appends rows to ``{split}-NNNNN.bin`` files of ``shard_size`` rows each, hashing as it goes."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_size: int) -> None:
        self.directory, self.split, self.dtype, self.shard_size = directory, split, dtype, shard_size
        self.shards: list[dict[str, Any]] = []
        self._file: Any = None
        self._rows = 0
        self._digest = hashlib.sha256()

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        while len(rows):
            if self._file is None:
                self._file = open(self.directory / shard_file_name(self.split, len(self.shards)), "wb")  # noqa: SIM115
            head, rows = rows[: self.shard_size - self._rows], rows[self.shard_size - self._rows :]
            self._file.write(memoryview(head).cast("B"))
            self._digest.update(memoryview(head).cast("B"))
            self._rows += len(head)
            if self._rows == self.shard_size:
                self._finish_file()

    def close(self) -> list[dict[str, Any]]:
        if self._file is not None:
            self._finish_file()
        return self.shards

    def _finish_file(self) -> None:
        self._file.close()
        name = shard_file_name(self.split, len(self.shards))
        self.shards.append({"file": name, "num_sequences": self._rows, "sha256": self._digest.hexdigest()})
        self._file, self._rows, self._digest = None, 0, hashlib.sha256()
