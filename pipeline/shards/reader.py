"""Reading a shard set: :class:`ShardReader`, the pretraining data path (layout in :mod:`pipeline.shards.format`).

Used by the pretrain stage and MLM data (``pipeline.mlm.data``)::

    train = ShardReader("runs/shards/wikitext2_128", split="train")
    rows = train.take(np.array([5, 0, 17]))     # [3, seq_len] int64
"""

from __future__ import annotations

import mmap
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.shards.format import DTYPES, MANIFEST_NAME, SPECIAL_KEYS, TOKENIZER_DIRNAME, read_manifest
from pipeline.shards.layout import SplitLayout
from pipeline.text import load_tokenizer

__all__ = ["ShardReader"]

_MADV_RANDOM = getattr(mmap, "MADV_RANDOM", None)  # absent on Windows


class ShardReader:
    """Random access to the sequences of one split of a shard set, backed by ``np.memmap``.

    ``reader[i]`` is row ``i`` (``[seq_len]``, the shard's dtype, read-only, O(1)): a view that
    keeps its file open while it lives; ``reader.take(indices)`` copies rows from any shards into
    one ``[n, seq_len]`` int64 array.

    Opening reads ``manifest.json`` (a few KB whatever the set's size: :mod:`pipeline.shards.format`)
    and checks the dtype and that the bundled tokenizer matches the manifest's hash.  Shard files
    are opened lazily and at most ``max_open`` stay open (least recently used first out), so a set
    of 10^5 files stays below the open-file and memory-map limits.  Every file's size is checked
    on open when the split has at most ``CHECK_ON_OPEN`` files (``check_files``); in larger sets
    each file is checked when first read - a stat of 10^5 files from every process is a storm on a
    parallel file system.  ``verify=True`` checks every file's size and sha256 on open.
    ``random_access=True`` tells the kernel that rows are read in random order (``MADV_RANDOM``):
    a row read from disk then reads its page, not the read-ahead window around it.
    Picklable (memory maps are reopened lazily), so DataLoader workers can share one."""

    CHECK_ON_OPEN = 4096

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        verify: bool = False,
        max_open: int = 128,
        random_access: bool = True,
    ) -> None:
        self.root, self.manifest = read_manifest(path)
        self.split = split
        self.seq_len, self.dtype = self._layout()
        tokenizer = self.manifest.get("tokenizer") or {}
        self.vocab_size = int(tokenizer.get("vocab_size", 0))
        self.special_ids = {key: tokenizer.get(key) for key in SPECIAL_KEYS}
        self.tokenizer_dir = self.root / str(tokenizer.get("dir", TOKENIZER_DIRNAME))
        self._check_tokenizer(tokenizer.get("sha256"))
        self.layout = SplitLayout.from_manifest(self.root, self.manifest, split)
        self.max_open, self.random_access = max(1, max_open), random_access
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()
        if verify or self.layout.num_shards <= self.CHECK_ON_OPEN:
            self.check_files(verify)

    # ------------------------------------------------------------------ validation

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
        return self.manifest["splits"][self.split]

    def _check_tokenizer(self, expected: str | None) -> None:
        file = self.tokenizer_dir / "tokenizer.json"
        if not file.is_file():
            raise PipelineError(f"shard set {self.root}: tokenizer copy missing ({file})")
        if expected and sha256_file(file) != expected:
            raise PipelineError(
                f"{file} does not match the sha256 in {self.root / MANIFEST_NAME}: "
                "the tokenizer was changed after sharding; re-shard with the new tokenizer"
            )

    def check_files(self, sha256: bool = False) -> None:
        """Raise PipelineError unless every shard file exists with its size (and its sha256)."""
        if not sha256:
            for shard in range(self.layout.num_shards):
                self._check_size(shard)
            return
        for shard, (_, _, digest) in enumerate(self.layout.records()):
            self._check_size(shard)
            if sha256_file(self.layout.path(shard)) != digest:
                raise PipelineError(
                    f"shard file {self.layout.path(shard)} is truncated or corrupted: sha256 mismatch; "
                    "re-run `pipeline shard`"
                )

    def _check_size(self, shard: int) -> None:
        file, count = self.layout.path(shard), self.layout.rows(shard)
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise PipelineError(
                f"shard file missing: {file} (listed in {self.root / MANIFEST_NAME})"
            ) from None
        expected = count * self.seq_len * self.dtype.itemsize
        if size != expected:
            raise PipelineError(
                f"shard file {file} is truncated or corrupted: {size} bytes, expected {expected} "
                f"({count} sequences x {self.seq_len} x {self.dtype.itemsize} bytes); re-run `pipeline shard`"
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
        return self.layout.num_sequences

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the split, from the manifest."""
        return int(self._split_info().get("num_tokens", 0))

    def _map(self, shard: int) -> np.memmap:
        """The memory map of shard file ``shard``, from the LRU of open maps (size checked on open)."""
        mapped = self._maps.get(shard)
        if mapped is not None:
            self._maps.move_to_end(shard)
            return mapped
        if self.layout.num_shards > self.CHECK_ON_OPEN:
            self._check_size(shard)
        shape = (self.layout.rows(shard), self.seq_len)
        mapped = np.memmap(self.layout.path(shard), dtype=self.dtype, mode="r", shape=shape)
        if self.random_access and _MADV_RANDOM is not None and getattr(mapped, "_mmap", None) is not None:
            mapped._mmap.madvise(_MADV_RANDOM)  # no read-ahead of 128 KB+ around every 256-byte row
        self._maps[shard] = mapped
        while len(self._maps) > self.max_open:
            self._maps.popitem(last=False)  # its file closes once no returned row views it
        return mapped

    def __getitem__(self, index: int) -> np.ndarray:
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"sequence index {index} out of range for {n} sequences")
        shard, row = self.layout.locate(i)
        return self._map(shard)[row]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (any order, repeats allowed) as a new ``[n, seq_len]`` int64 array."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"sequence indices out of range for {n} sequences")
        out = np.empty((idx.size, self.seq_len), dtype=np.int64)
        shard_of, row_of = np.divmod(idx, max(self.layout.shard_size, 1))
        order = np.argsort(shard_of, kind="stable")  # one fancy-index read per shard touched
        present, first = np.unique(shard_of[order], return_index=True)
        ends = np.append(first[1:], idx.size)
        for shard, begin, end in zip(present.tolist(), first.tolist(), ends.tolist()):
            group = order[begin:end]
            out[group] = self._map(shard)[row_of[group]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = OrderedDict()  # a memmap would pickle as a full copy
        return state

    def __repr__(self) -> str:
        return f"ShardReader({str(self.root)!r}, split={self.split!r}, sequences={len(self)}, seq_len={self.seq_len})"
