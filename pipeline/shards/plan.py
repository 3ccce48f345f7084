"""Planning side of ``pipeline shard``: the tokenizer, who encodes which file, and work units on disk.

Used by :mod:`pipeline.shards.encode`, :mod:`pipeline.shards.build` and :mod:`pipeline.shards.merge`.  Each input file is cut
into work units of ``docs_per_unit`` consecutive documents.  A unit holds, per split, the token
stream of its documents, each followed by one [SEP] (``d1 [SEP] d2 [SEP]``), in the shard dtype,
under ``output_dir/parts/units/``: ``f00003-c000012.train.bin``, ``...validation.bin`` and a JSON
record (counts + sha256) written last, by rename, which marks the unit complete.  When a file is
done a marker ``f00003.done.json`` records its number of units.  Every record carries a
fingerprint of everything that decides its content (tokenizer hash, corpus options, seed,
val_fraction, docs_per_unit, the file's base name and size), so a rerun reuses exactly the units
that are complete, checksum-valid and current, whichever worker or run wrote them.

Worker ``i`` of ``N`` encodes only its share of the files (largest first to the least-loaded
worker: deterministic, so every worker computes the same partition).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io import sha256_file, write_json
from pipeline.shards.config import ShardConfig
from pipeline.shards.format import DTYPES, SPLITS, dtype_for_vocab
from pipeline.text import is_hub_name, read_tokenizer_dir

UNIT_FORMAT = 1
NEEDED_SPECIALS = ("cls_id", "sep_id", "pad_id", "mask_id")


@dataclass(frozen=True)
class TokenizerInfo:
    """What sharding needs from a tokenizer directory."""

    directory: Path
    sha256: str  # of tokenizer.json
    vocab_size: int
    dtype: str  # "uint16" | "uint32"
    special_ids: dict[str, int | None]  # pad_id, unk_id, cls_id, sep_id, mask_id
    backend_json: str  # tokenizer.json, for the encode processes


def tokenizer_info(directory: str, seq_len: int) -> TokenizerInfo:
    """Read and check a tokenizer directory with ``tokenizers`` alone (``transformers`` takes seconds
    to import and is not needed to encode); PipelineError if unusable."""
    path = Path(directory)
    if not path.is_dir():
        raise PipelineError(f"tokenizer: directory not found: {path} (create it with `pipeline tokenizer`)")
    if not (path / "tokenizer.json").is_file():
        raise PipelineError(
            f"tokenizer: {path} is not a tokenizer directory (no tokenizer.json; create one with `pipeline tokenizer`)"
        )
    try:
        files = read_tokenizer_dir(path)
    except PipelineError as e:
        raise PipelineError(f"tokenizer: {e}") from None
    ids = files.special_ids
    missing = [key[:-3] for key in NEEDED_SPECIALS if ids[key] is None]
    if missing:
        raise PipelineError(
            f"tokenizer: {path} defines no {'/'.join(missing)} token (needed for MLM sequences)"
        )
    if seq_len > files.model_max_length:
        raise PipelineError(
            f"seq_len={seq_len} is larger than the tokenizer's model_max_length={files.model_max_length} "
            f"({path}); lower seq_len or retrain the tokenizer with a larger model_max_length"
        )
    return TokenizerInfo(
        path,
        sha256_file(path / "tokenizer.json"),
        files.vocab_size,
        dtype_for_vocab(files.vocab_size),
        ids,
        files.tokenizer_json,
    )


def source_name(source: str) -> str:
    """The name a file is known by in fingerprints and the split hash: independent of its directory."""
    return source if is_hub_name(source) else os.path.basename(source)


def source_size(source: str) -> int:
    return 0 if is_hub_name(source) else os.path.getsize(source)


def partition(sizes: list[int], num_workers: int) -> list[list[int]]:
    """File indices per worker: largest files first, each to the least-loaded worker."""
    loads = [0] * num_workers
    shares: list[list[int]] = [[] for _ in range(num_workers)]
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        worker = min(range(num_workers), key=lambda w: (loads[w], w))
        loads[worker] += max(sizes[index], 1)
        shares[worker].append(index)
    return [sorted(share) for share in shares]


@dataclass
class Plan:
    """What this worker does: inputs, its share of them and where the units go."""

    cfg: ShardConfig
    sources: list[str]
    sizes: list[int]
    tokenizer: TokenizerInfo
    fingerprints: list[str] = field(default_factory=list)
    mine: list[int] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def parts_dir(self) -> Path:
        return self.out / "parts"

    @property
    def units_dir(self) -> Path:
        return self.parts_dir / "units"

    @property
    def num_proc(self) -> int:
        return self.cfg.num_proc or len(os.sched_getaffinity(0))

    def unit_path(self, file_index: int, chunk: int, suffix: str) -> Path:
        return self.units_dir / f"f{file_index:05d}-c{chunk:06d}.{suffix}"

    def marker_path(self, file_index: int) -> Path:
        return self.units_dir / f"f{file_index:05d}.done.json"

    def remove_empty_dirs(self) -> None:
        """Remove ``units/``, ``parts/`` and the output directory, as far as they are empty."""
        for directory in (self.units_dir, self.parts_dir, self.out):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                return  # not empty: keep it and everything above it


def make_plan(cfg: ShardConfig, sources: list[str], tokenizer: TokenizerInfo) -> Plan:
    plan = Plan(cfg, sources, [source_size(s) for s in sources], tokenizer)
    for source, size in zip(sources, plan.sizes):
        identity = {
            "unit_format": UNIT_FORMAT,
            "tokenizer_sha256": tokenizer.sha256,
            "dtype": tokenizer.dtype,
            "corpus": asdict(cfg.corpus),
            "seed": cfg.seed,
            "val_fraction": cfg.val_fraction,
            "docs_per_unit": cfg.docs_per_unit,
            "source": source_name(source),
            "bytes": size,
        }
        plan.fingerprints.append(hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest())
    plan.mine = partition(plan.sizes, cfg.num_workers)[cfg.worker_index]
    return plan


def shard_rows(cfg: ShardConfig, dtype: np.dtype) -> int:
    """Sequences per shard file: ``shard_size``, or as many as fit in ``shard_size_mb``."""
    if cfg.shard_size_mb is None:
        return cfg.shard_size
    return max(1, int(cfg.shard_size_mb * 2**20) // (cfg.seq_len * dtype.itemsize))


# ----------------------------------------------------------------------------- unit records


@dataclass
class Encoded:
    """One encoded batch of documents (what :mod:`pipeline.shards.encode` hands a unit writer)."""

    streams: dict[str, np.ndarray]  # split -> tokens of its documents, each followed by [SEP]
    documents: dict[str, int]  # split -> non-empty documents
    documents_read: int


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def unit_record(plan: Plan, file_index: int, chunk: int, check_data: bool) -> dict[str, Any] | None:
    """The record of a complete, current unit (data checksums verified if ``check_data``), else None."""
    record = _read_json(plan.unit_path(file_index, chunk, "json"))
    if not record or record.get("fingerprint") != plan.fingerprints[file_index]:
        return None
    if check_data:
        itemsize = DTYPES[plan.tokenizer.dtype].itemsize
        for split in SPLITS:
            data, info = plan.unit_path(file_index, chunk, f"{split}.bin"), record["splits"][split]
            if not data.is_file() or data.stat().st_size != info["tokens"] * itemsize:
                return None
            if sha256_file(data) != info["sha256"]:
                return None
    return record


def file_marker(plan: Plan, file_index: int) -> dict[str, Any] | None:
    """The done-marker of a fully encoded, current file, else None."""
    marker = _read_json(plan.marker_path(file_index))
    if not marker or marker.get("fingerprint") != plan.fingerprints[file_index]:
        return None
    return marker


def write_file_marker(plan: Plan, file_index: int, chunks: int, documents: int) -> None:
    """Record that a file is fully encoded into ``chunks`` units (``documents`` documents read)."""
    marker = {
        "fingerprint": plan.fingerprints[file_index],
        "chunks": chunks,
        "documents_read": documents,
        "source": plan.sources[file_index],
    }
    write_json(plan.marker_path(file_index), marker, end="\n")


class UnitWriter:
    """Streams one unit's encoded batches to temp files; ``commit`` renames them into place."""

    def __init__(self, plan: Plan, file_index: int, chunk: int) -> None:
        self.plan, self.file_index, self.chunk = plan, file_index, chunk
        self.final = {split: plan.unit_path(file_index, chunk, f"{split}.bin") for split in SPLITS}
        self.temp = {split: path.with_name(path.name + ".tmp") for split, path in self.final.items()}
        self.files = {split: open(path, "wb") for split, path in self.temp.items()}  # noqa: SIM115
        self.hashes = {split: hashlib.sha256() for split in SPLITS}
        self.counts = {split: {"documents": 0, "tokens": 0} for split in SPLITS}
        self.documents_read = 0

    def add(self, encoded: Encoded) -> None:
        self.documents_read += encoded.documents_read
        for split in SPLITS:
            stream = encoded.streams[split]
            self.files[split].write(memoryview(stream))
            self.hashes[split].update(memoryview(stream))
            self.counts[split]["documents"] += encoded.documents[split]
            self.counts[split]["tokens"] += int(stream.size)

    def commit(self) -> dict[str, Any]:
        for split in SPLITS:
            self.files[split].close()
            os.replace(self.temp[split], self.final[split])
        record = {
            "fingerprint": self.plan.fingerprints[self.file_index],
            "file_index": self.file_index,
            "chunk": self.chunk,
            "documents_read": self.documents_read,
            "splits": {s: {**self.counts[s], "sha256": self.hashes[s].hexdigest()} for s in SPLITS},
        }
        write_json(self.plan.unit_path(self.file_index, self.chunk, "json"), record, end="\n")
        return record

    def abort(self) -> None:
        for split in SPLITS:
            self.files[split].close()
            self.temp[split].unlink(missing_ok=True)
