"""Merge step of ``pipeline shard``: pack every encoded work unit into the final shard set.

Called by :func:`pipeline.shards.build.build_shards` (with one worker; with ``merge=true``; or in
the last of N workers to finish).  Reads every unit's stream in input order, packs it into
``[CLS] body [SEP]`` rows (the rule in :mod:`pipeline.shards.format`) and writes shard files into
``output_dir/.staging`` (with each split's index and token statistics); copies the tokenizer;
moves the files into place and writes ``manifest.json`` last.  Then verifies the checksums, writes
``config.yaml`` and deletes ``parts/`` (unless ``keep_parts``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.config import save_config
from pipeline.errors import PipelineError
from pipeline.io import write_json
from pipeline.shards.format import (
    DTYPES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    TOKENIZER_DIRNAME,
    Packer,
    ShardFileWriter,
    read_manifest,
)
from pipeline.shards.plan import Plan, file_marker, partition, shard_rows, source_name, unit_record
from pipeline.shards.reader import ShardReader
from pipeline.shards.stats import TokenCounter

_PIECE_TOKENS = 1 << 22  # unit streams are read in pieces of this many tokens


def merge_parts(plan: Plan) -> dict[str, Any]:
    """Pack every encoded unit into the final shard set of ``plan.out``; returns the manifest."""
    units = _collect_units(plan)
    staging = plan.out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        splits = {split: _pack_split(plan, units, split, staging) for split in SPLITS}
        if not any(info["num_tokens"] for info in splits.values()):
            shutil.rmtree(staging)
            shutil.rmtree(plan.parts_dir, ignore_errors=True)
            plan.remove_empty_dirs()
            raise PipelineError(f"the input yields zero tokens: {', '.join(plan.sources)}")
        shutil.copytree(plan.tokenizer.directory, staging / TOKENIZER_DIRNAME)
        manifest = _manifest(plan, splits)
        _publish(plan.out, staging, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if plan.cfg.verify:
        for split in SPLITS:
            ShardReader(plan.out, split, verify=True)
    save_config(plan.cfg, plan.out / "config.yaml")
    if plan.cfg.keep_parts:
        (plan.parts_dir / "merge.lock").unlink(missing_ok=True)
    else:
        shutil.rmtree(plan.parts_dir, ignore_errors=True)
    return manifest


def _collect_units(plan: Plan) -> list[dict[str, Any]]:
    owners = partition(plan.sizes, plan.cfg.num_workers)
    records = []
    for index, source in enumerate(plan.sources):
        owner = next(w for w, share in enumerate(owners) if index in share)
        rerun = f"run worker_index={owner} (of num_workers={plan.cfg.num_workers}) first"
        marker = file_marker(plan, index)
        if marker is None:
            raise PipelineError(
                f"cannot merge: input {source} has not been encoded with this config; {rerun}"
            )
        for chunk in range(marker["chunks"]):
            record = unit_record(plan, index, chunk, check_data=False)
            if record is None:
                raise PipelineError(
                    f"cannot merge: work unit {plan.unit_path(index, chunk, 'json')} is missing or stale; {rerun}"
                )
            records.append(record)
    return records


def _unit_tokens(plan: Plan, record: dict[str, Any], split: str):
    """A unit's stream for ``split`` in pieces, checked against its size and sha256."""
    path = plan.unit_path(record["file_index"], record["chunk"], f"{split}.bin")
    info, dtype = record["splits"][split], DTYPES[plan.tokenizer.dtype]
    digest = hashlib.sha256()
    intact = path.is_file() and path.stat().st_size == info["tokens"] * dtype.itemsize
    if intact and info["tokens"]:
        data = np.memmap(path, dtype=dtype, mode="r")
        for start in range(0, data.size, _PIECE_TOKENS):
            piece = np.array(data[start : start + _PIECE_TOKENS])
            digest.update(memoryview(piece))
            yield piece
    if not intact or digest.hexdigest() != info["sha256"]:
        plan.unit_path(record["file_index"], record["chunk"], "json").unlink(missing_ok=True)
        raise PipelineError(
            f"work unit {path} is truncated or corrupted; it was discarded: rerun to re-encode it"
        )


def _pack_split(plan: Plan, units: list[dict[str, Any]], split: str, staging: Path) -> dict[str, Any]:
    tok, dtype = plan.tokenizer, DTYPES[plan.tokenizer.dtype]
    writer = ShardFileWriter(staging, split, dtype, shard_rows(plan.cfg, dtype))
    packer = Packer(plan.cfg.seq_len, tok.special_ids, dtype, writer.write)
    counter = TokenCounter(tok.vocab_size, list(tok.special_ids.values()))
    documents = 0
    for record in tqdm(
        units, desc=f"pack {split}", unit=" units", disable=not plan.cfg.progress, leave=False
    ):
        documents += record["splits"][split]["documents"]
        for piece in _unit_tokens(plan, record, split):
            packer.feed(piece)
            counter.add(piece)
    packer.finish()
    files, sequences = writer.close(), writer.num_sequences
    return {
        "num_documents": documents,
        "num_tokens": packer.real_tokens,
        "num_sequences": sequences,
        "padding_fraction": _padding(packer.real_tokens, sequences, plan.cfg.seq_len),
        **counter.statistics(),
        **files,
    }


def _padding(tokens: int, sequences: int, seq_len: int) -> float:
    return round(1 - tokens / (sequences * seq_len), 6) if sequences else 0.0


def _identity(plan: Plan) -> dict[str, Any]:
    """Manifest keys that decide the content: compared to detect an already complete run."""
    cfg = plan.cfg
    config = {
        "input": cfg.input,
        "seq_len": cfg.seq_len,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
        "shard_size": shard_rows(cfg, DTYPES[plan.tokenizer.dtype]),
        "corpus": asdict(cfg.corpus),
    }
    inputs = [{"name": source_name(s), "bytes": size} for s, size in zip(plan.sources, plan.sizes)]
    return {"inputs": inputs, "config": config}


def _manifest(plan: Plan, splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tok, seq_len = plan.tokenizer, plan.cfg.seq_len
    totals = {
        key: sum(s[f"num_{key}"] for s in splits.values()) for key in ("documents", "tokens", "sequences")
    }
    totals["padding_fraction"] = _padding(totals["tokens"], totals["sequences"], seq_len)
    tokenizer = {
        "dir": TOKENIZER_DIRNAME,
        "sha256": tok.sha256,
        "vocab_size": tok.vocab_size,
        **tok.special_ids,
    }
    return {
        "format_version": FORMAT_VERSION,
        "seq_len": seq_len,
        "dtype": tok.dtype,
        "tokenizer": tokenizer,
        "splits": splits,
        "totals": totals,
        **_identity(plan),
    }


def _publish(out: Path, staging: Path, manifest: dict[str, Any]) -> None:
    """Move the staged set into ``out``; the manifest goes last, so a set is valid only when complete."""
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for old in [*out.glob("*.bin"), *out.glob("*.index.tsv")]:
        if old.name.split("-", 1)[0].split(".", 1)[0] in SPLITS:  # shards and indexes of an earlier run
            old.unlink()
    for staged in sorted([*staging.glob("*.bin"), *staging.glob("*.index.tsv")]):
        os.replace(staged, out / staged.name)
    shutil.rmtree(out / TOKENIZER_DIRNAME, ignore_errors=True)
    os.replace(staging / TOKENIZER_DIRNAME, out / TOKENIZER_DIRNAME)
    write_json(out / MANIFEST_NAME, manifest, end="\n")


def finished_manifest(plan: Plan) -> dict[str, Any] | None:
    """The manifest of ``plan.out`` if it is a complete, intact set for this tokenizer, input and config."""
    if not (plan.out / MANIFEST_NAME).is_file():
        return None
    try:
        _, manifest = read_manifest(plan.out)
        if manifest.get("format_version") != FORMAT_VERSION:
            return None  # an older format: rewrite it
        if manifest.get("tokenizer", {}).get("sha256") != plan.tokenizer.sha256:
            return None
        if any(manifest.get(key) != value for key, value in _identity(plan).items()):
            return None
        for split in SPLITS:
            ShardReader(plan.out, split).check_files()
    except PipelineError:
        return None
    return manifest
