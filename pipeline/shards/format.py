"""Packed token shards: the on-disk format, its manifest, and the writers of shard files.

A shard set is written by ``pipeline shard --config configs/shard/wikitext2.yaml`` (the work is in
:mod:`pipeline.shards.build` and :mod:`pipeline.shards.merge`) and read with
``ShardReader(output_dir, split="train")`` (:mod:`pipeline.shards.reader`).  Layout of ``output_dir``::

    manifest.json          format version, seq_len, dtype, tokenizer hash + special ids, per split:
                           totals, token statistics, shard_size, num_shards, its index file
                           (name + sha256) and - for splits of at most 1024 files, i.e. every set
                           up to ~67M sequences at the default shard size - the same per-shard
                           records (file, num_sequences, sha256) as a ``shards`` list; the content config
    train.index.tsv        one line per shard file of the split, in order: file, sequences, sha256
    train-00000.bin ...    raw little-endian uint16 (vocab <= 65535) or uint32 token ids,
    validation-00000.bin   C order [num_sequences, seq_len]
    tokenizer/             a copy of the tokenizer, so the set is self-contained
    config.yaml            the resolved stage config

Per split, ``manifest.json`` holds ``num_documents``, ``num_tokens`` (real tokens: [CLS]/[SEP]
included, [PAD] not), ``num_sequences``, ``padding_fraction``, ``shard_size`` (sequences per shard
file; only the last file may hold fewer), ``num_shards``, ``index`` and two statistics of the
document tokens - every token but the special ones ([PAD] [UNK] [CLS] [SEP] [MASK]: what an MLM is
never asked to predict), counted with ``np.bincount`` while packing:

* ``unigram_entropy``: ``-sum_t p(t) ln p(t)`` in nats, ``p`` the tokens' frequencies in the split
  (the loss of a model that predicts every masked token from frequencies alone);
* ``top_token_fraction``: the most frequent token's share (the accuracy of always guessing it).

Both are ``null`` for a split without such tokens.  Shard ``i`` of a split is ``{split}-{i:05d}.bin``
and holds sequences ``[i * shard_size, (i + 1) * shard_size)``, so finding a sequence needs neither
the index nor any per-shard record: opening a set reads one small JSON file whatever its size.
The index is read only to verify checksums.

Format versions: 2 (this one) added the index file, so that the manifest of a huge set stays small:
version 1 listed every shard file in ``manifest.json``, which 10^5 files make a 20 MB JSON document
to parse on every open, in every process.  Version 2 keeps that ``shards`` list only for splits of
at most 1024 files (readers of version 1 manifests keep working on every set of that size); beyond,
the index alone holds the records.  Shard files are unchanged and version 1 sets are still read.

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

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SPECIAL_KEYS",
    "SPLITS",
    "TOKENIZER_DIRNAME",
    "READ_VERSIONS",
    "Packer",
    "ShardFileWriter",
    "dtype_for_vocab",
    "index_file_name",
    "read_manifest",
    "shard_file_name",
]

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
INLINE_RECORDS = 1024  # splits of at most this many files also list their records in the manifest
TOKENIZER_DIRNAME = "tokenizer"
SPLITS = ("train", "validation")
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SPECIAL_KEYS = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")


def dtype_for_vocab(vocab_size: int) -> str:
    """Name of the narrowest token dtype for ids in ``[0, vocab_size)``."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def shard_file_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def index_file_name(split: str) -> str:
    return f"{split}.index.tsv"


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
    if not isinstance(manifest, dict) or manifest.get("format_version") not in READ_VERSIONS:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise PipelineError(
            f"{file}: unknown shard format_version {version!r} (this pipeline reads "
            f"{', '.join(map(str, READ_VERSIONS))})"
        )
    return file.parent, manifest


class Packer:
    """Cuts the stream ``d1 [SEP] d2 [SEP] ... dn [SEP]`` into ``[CLS] body [SEP]`` rows; the final
    [SEP] is dropped and the last row is padded (the packing rule above)."""

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
    """Appends rows to ``{split}-NNNNN.bin`` files of ``shard_size`` rows each, hashing as it goes,
    and a line per finished file to ``{split}.index.tsv``: memory stays flat however many files."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_size: int) -> None:
        self.directory, self.split, self.dtype, self.shard_size = directory, split, dtype, shard_size
        self.num_shards = 0
        self.num_sequences = 0
        self._file: Any = None
        self._rows = 0
        self._digest = hashlib.sha256()
        self._index = open(directory / index_file_name(split), "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._index_digest = hashlib.sha256()
        self._records: list[dict[str, Any]] = []  # the first INLINE_RECORDS + 1 only: memory stays flat

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        while len(rows):
            if self._file is None:
                self._file = open(self.directory / shard_file_name(self.split, self.num_shards), "wb")  # noqa: SIM115
            head, rows = rows[: self.shard_size - self._rows], rows[self.shard_size - self._rows :]
            self._file.write(memoryview(head).cast("B"))
            self._digest.update(memoryview(head).cast("B"))
            self._rows += len(head)
            self.num_sequences += len(head)
            if self._rows == self.shard_size:
                self._finish_file()

    def close(self) -> dict[str, Any]:
        """The split's manifest keys for its files: shard_size, num_shards and the index."""
        if self._file is not None:
            self._finish_file()
        self._index.close()
        index = {"file": index_file_name(self.split), "sha256": self._index_digest.hexdigest()}
        keys = {"shard_size": self.shard_size, "num_shards": self.num_shards, "index": index}
        if self.num_shards <= INLINE_RECORDS:
            keys["shards"] = self._records
        return keys

    def _finish_file(self) -> None:
        self._file.close()
        name, sha256 = shard_file_name(self.split, self.num_shards), self._digest.hexdigest()
        line = f"{name}\t{self._rows}\t{sha256}\n"
        self._index.write(line)
        if len(self._records) <= INLINE_RECORDS:
            self._records.append({"file": name, "num_sequences": self._rows, "sha256": sha256})
        self._index_digest.update(line.encode())
        self.num_shards += 1
        self._file, self._rows, self._digest = None, 0, hashlib.sha256()
