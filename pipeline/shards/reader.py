"""Reading a shard set: :class:`ShardReader`, the pretraining data path (layout in :mod:`pipeline.shards.format`).

Used by the pretrain stage and MLM data (``pipeline.mlm.data``)::

    train = ShardReader("runs/shards/wikitext2_128", split="train")
    rows = train.take(np.array([5, 0, 17]))     # [3, seq_len] int64
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.shards.format import DTYPES, MANIFEST_NAME, SPECIAL_KEYS, TOKENIZER_DIRNAME, read_manifest
from pipeline.text import load_tokenizer

__all__ = ["ShardReader"]


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

    def load_tokenizer(self):
        """The set's own tokenizer copy, checked against the vocabulary the shards were written with."""
        tokenizer = load_tokenizer(self.tokenizer_dir)
        if len(tokenizer) != self.vocab_size:
            raise PipelineError(
                f"vocab size mismatch: tokenizer {self.tokenizer_dir} has {len(tokenizer)} tokens but the shards "
                f"in {self.root} were written with {self.vocab_size}"
            )
        return tokenizer

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
