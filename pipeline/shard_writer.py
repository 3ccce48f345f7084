"""Writes a shard set: ``pipeline shard`` end to end (:func:`build_shards` is the library entry).

Run through the stage: ``pipeline shard --config configs/shard/wikitext2.yaml [key=value ...]``.

1. Resolve the inputs and load the tokenizer: every bad-input error comes before anything is written.
2. Encode this worker's files into work units (:mod:`pipeline.shard_encode`), reusing the units a
   previous, interrupted run completed (:mod:`pipeline.shard_plan` has the rules).
3. Merge (with one worker; with ``merge=true``; or in the last of N workers to finish, which takes
   ``parts/merge.lock``): read every unit's stream in input order, pack it into ``[CLS] body [SEP]``
   rows (rule in :mod:`pipeline.shards`) and write shard files into ``output_dir/.staging``; copy
   the tokenizer; move the files into place and write ``manifest.json`` last.  Then verify the
   checksums, write ``config.yaml`` and delete ``parts/`` (unless ``keep_parts``).

Because documents, splits and packing do not depend on how the work was cut, any ``num_workers``,
``num_proc``, ``docs_per_unit`` or interruption gives byte-identical shards and manifest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from pipeline import console
from pipeline.config import save_config
from pipeline.corpus_inputs import resolve_inputs
from pipeline.errors import PipelineError
from pipeline.io import write_json
from pipeline.shard_encode import encode_parts
from pipeline.shard_plan import (
    Plan,
    file_marker,
    load_tokenizer,
    make_plan,
    partition,
    shard_rows,
    source_name,
    unit_record,
)
from pipeline.shards import (
    DTYPES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    TOKENIZER_DIRNAME,
    Packer,
    ShardFileWriter,
    ShardReader,
    read_manifest,
)

if TYPE_CHECKING:
    from pipeline.stages.shard import Config

_PIECE_TOKENS = 1 << 22  # unit streams are read in pieces of this many tokens


def build_shards(cfg: Config) -> dict[str, Any] | None:
    """Run the shard stage; returns the manifest, or None for a worker that leaves the merge to another."""
    started = time.perf_counter()
    plan = make_plan(cfg, resolve_inputs(cfg.input), load_tokenizer(cfg.tokenizer, cfg.seq_len))
    finished = _finished_manifest(plan)
    if finished is not None:
        console.info(f"shard: {plan.out} is already complete for this input and config; nothing to do")
        return finished
    units = None if cfg.merge else _encode(plan)
    if not (cfg.merge or cfg.num_workers == 1 or _claim_merge(plan)):
        return None
    manifest = merge_parts(plan)
    _print_summary(plan, manifest, time.perf_counter() - started, units)
    return manifest


def _encode(plan: Plan) -> dict[str, int]:
    cfg = plan.cfg
    created = not plan.out.exists()
    desc = f"encode (worker {cfg.worker_index + 1}/{cfg.num_workers})" if cfg.num_workers > 1 else "encode"
    with tqdm(desc=desc, unit=" docs", disable=not cfg.progress, dynamic_ncols=True) as bar:
        try:
            return encode_parts(plan, bar)
        except BaseException:
            if created:
                _remove_empty_dirs(plan)
            raise


def _remove_empty_dirs(plan: Plan) -> None:
    for directory in (plan.units_dir, plan.parts_dir, plan.out):
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return  # not empty: keep it and everything above it


def _claim_merge(plan: Plan) -> bool:
    """True for the one worker that merges: all files are encoded and it created the lock first."""
    pending = [plan.sources[i] for i in range(len(plan.sources)) if file_marker(plan, i) is None]
    if pending:
        console.info(
            f"shard: worker {plan.cfg.worker_index} done; {len(pending)} input file(s) still being "
            "encoded by other workers; the last one to finish merges (or run with merge=true)"
        )
        return False
    try:
        os.close(os.open(plan.parts_dir / "merge.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        console.info(f"shard: another worker is merging {plan.out} (if none is, run with merge=true)")
        return False
    return True


# ----------------------------------------------------------------------------- merge


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
            _remove_empty_dirs(plan)
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
    dtype = DTYPES[plan.tokenizer.dtype]
    writer = ShardFileWriter(staging, split, dtype, shard_rows(plan.cfg, dtype))
    packer = Packer(plan.cfg.seq_len, plan.tokenizer.special_ids, dtype, writer.write)
    documents = 0
    for record in tqdm(
        units, desc=f"pack {split}", unit=" units", disable=not plan.cfg.progress, leave=False
    ):
        documents += record["splits"][split]["documents"]
        for piece in _unit_tokens(plan, record, split):
            packer.feed(piece)
    packer.finish()
    shards = writer.close()
    sequences = sum(s["num_sequences"] for s in shards)
    return {
        "shards": shards,
        "num_documents": documents,
        "num_tokens": packer.real_tokens,
        "num_sequences": sequences,
        "padding_fraction": _padding(packer.real_tokens, sequences, plan.cfg.seq_len),
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
    for old in out.glob("*.bin"):
        if old.name.split("-", 1)[0] in SPLITS:  # shards of an earlier run
            old.unlink()
    for staged in sorted(staging.glob("*.bin")):
        os.replace(staged, out / staged.name)
    shutil.rmtree(out / TOKENIZER_DIRNAME, ignore_errors=True)
    os.replace(staging / TOKENIZER_DIRNAME, out / TOKENIZER_DIRNAME)
    write_json(out / MANIFEST_NAME, manifest, end="\n")


def _finished_manifest(plan: Plan) -> dict[str, Any] | None:
    """The manifest of ``plan.out`` if it is a complete, intact set for this tokenizer, input and config."""
    if not (plan.out / MANIFEST_NAME).is_file():
        return None
    try:
        _, manifest = read_manifest(plan.out)
        if manifest.get("tokenizer", {}).get("sha256") != plan.tokenizer.sha256:
            return None
        if any(manifest.get(key) != value for key, value in _identity(plan).items()):
            return None
        for split in SPLITS:
            ShardReader(plan.out, split)
    except PipelineError:
        return None
    return manifest


def _print_summary(
    plan: Plan, manifest: dict[str, Any], seconds: float, units: dict[str, int] | None
) -> None:
    files = sum(len(s["shards"]) for s in manifest["splits"].values())
    console.info(
        f"shard: wrote {files} shard file(s) to {plan.out} (seq_len {plan.cfg.seq_len}, {manifest['dtype']})"
    )
    rows = [
        (name, *(info[f"num_{k}"] for k in ("documents", "tokens", "sequences")), info["padding_fraction"])
        for name, info in manifest["splits"].items()
    ]
    totals = manifest["totals"]
    rows.append(
        ("total", totals["documents"], totals["tokens"], totals["sequences"], totals["padding_fraction"])
    )
    for name, documents, tokens, sequences, padding in rows:
        console.info(
            f"  {name:<10} {documents:>12,} docs {tokens:>14,} tokens {sequences:>11,} sequences {padding:6.2%} padding"
        )
    work = (
        ""
        if units is None
        else f"; {units['units_encoded']} work unit(s) encoded, {units['units_reused']} reused"
    )
    console.info(f"  {seconds:.1f}s, {totals['tokens'] / max(seconds, 1e-9):,.0f} tokens/s{work}")
