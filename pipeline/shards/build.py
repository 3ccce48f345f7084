"""Writes a shard set: ``pipeline shard`` end to end (:func:`build_shards` is the library entry).

Run through the stage: ``pipeline shard --config configs/shard/wikitext2.yaml [key=value ...]``.

1. Resolve the inputs and load the tokenizer: every bad-input error comes before anything is written.
2. Encode this worker's files into work units (:mod:`pipeline.shards.encode`), reusing the units a
   previous, interrupted run completed (:mod:`pipeline.shards.plan` has the rules).
3. Merge (with one worker; with ``merge=true``; or in the last of N workers to finish, which takes
   ``parts/merge.lock``): :mod:`pipeline.shards.merge` packs every unit into the final shard files,
   writes ``manifest.json`` last, verifies the checksums and deletes ``parts/``.

Because documents, splits and packing do not depend on how the work was cut, any ``num_workers``,
``num_proc``, ``docs_per_unit`` or interruption gives byte-identical shards and manifest.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tqdm.auto import tqdm

from pipeline import console
from pipeline.shards.config import ShardConfig
from pipeline.shards.encode import encode_parts
from pipeline.shards.merge import finished_manifest, merge_parts
from pipeline.shards.plan import Plan, file_marker, make_plan, tokenizer_info
from pipeline.text import resolve_inputs


def build_shards(cfg: ShardConfig) -> dict[str, Any] | None:
    """Run the shard stage; returns the manifest, or None for a worker that leaves the merge to another."""
    started = time.perf_counter()
    plan = make_plan(cfg, resolve_inputs(cfg.input), tokenizer_info(cfg.tokenizer, cfg.seq_len))
    finished = finished_manifest(plan)
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
                plan.remove_empty_dirs()
            raise


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


def _print_summary(
    plan: Plan, manifest: dict[str, Any], seconds: float, units: dict[str, int] | None
) -> None:
    files = sum(s["num_shards"] for s in manifest["splits"].values())
    console.info(
        f"shard: wrote {files} shard file(s) to {plan.out} (seq_len {plan.cfg.seq_len}, {manifest['dtype']})"
    )
    rows = [
        (name, *(info[f"num_{k}"] for k in ("documents", "tokens", "sequences")), info["padding_fraction"])
        + (info["unigram_entropy"],)
        for name, info in manifest["splits"].items()
    ]
    totals = manifest["totals"]
    rows.append(
        (
            "total",
            totals["documents"],
            totals["tokens"],
            totals["sequences"],
            totals["padding_fraction"],
            None,
        )
    )
    for name, documents, tokens, sequences, padding, entropy in rows:
        unigram = "" if entropy is None else f", unigram entropy {entropy:.2f} nats"
        console.info(
            f"  {name:<10} {documents:>12,} docs {tokens:>14,} tokens {sequences:>11,} sequences "
            f"{padding:6.2%} padding{unigram}"
        )
    work = (
        ""
        if units is None
        else f"; {units['units_encoded']} work unit(s) encoded, {units['units_reused']} reused"
    )
    console.info(f"  {seconds:.1f}s, {totals['tokens'] / max(seconds, 1e-9):,.0f} tokens/s{work}")
