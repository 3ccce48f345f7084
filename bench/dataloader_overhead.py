"""Data-loading overhead of pretraining: time the loop waits for batches, and resume seek time.

Run from the repository root (the venv active):

    python -m bench.dataloader_overhead               # BERT mini, fp32 (~3 min on 2 cores)
    python -m bench.dataloader_overhead --size base --steps 3

1. Wait fraction.  The real ``pipeline pretrain`` task (shards -> Masker -> SparseMLM, fused AdamW)
   trains in the real ``fit`` loop; every request the loop makes for its next micro-batch is timed
   (``bench.ours.instrumented_fit``).  The fraction of steady-state step time spent blocked in those
   requests is the data overhead.  The loop's prefetch thread (``train.prefetch``, default 4) is
   compared with ``train.prefetch=0`` (batches built inline on the critical path), alternating.
   A small model is the hard case: the faster the step, the larger the share data preparation takes.
2. Resume seek.  Resuming at optimizer step ``k`` starts the loop's batch stream at ``k`` (an O(1)
   computation of global positions and of their samples in the keyed epoch order) instead of
   replaying batches.  Measured: from creating the stream at ``k`` to holding its first batch, for
   early and very late ``k``, and one batch's samples for larger corpora (10^6, 10^7 and 10^10
   sequences) beside the materialised permutation the loop used before issue #15.

Writes ``bench/results/dataloader_overhead.json``.
"""

from __future__ import annotations

import argparse
import time

from bench.common import machine_info, median, print_table, quiet_environment, write_results

quiet_environment()

from bench import workspace  # noqa: E402
from bench.ours import PretrainSetup, Variant, pretrain_config, run_pretrain  # noqa: E402

VOCAB = {"tiny": 8000, "mini": 8000, "base": 30522}


def wait_fraction(args, shards, prefetch: int) -> dict:
    setup = PretrainSetup(shards, "bert", args.size, args.batch_size, grad_accum=1)
    run = run_pretrain(Variant(), setup, steps=args.warmup + args.steps + 1, prefetch=prefetch)
    durations, waits = run["durations"][args.warmup :], run["waits"][args.warmup :]
    return {
        "prefetch": prefetch,
        "step_s": median(durations),
        "wait_ms_per_step": 1000 * sum(waits) / len(waits),
        "wait_fraction": sum(waits) / sum(durations),
        "max_wait_ms": 1000 * max(waits),
    }


def batch_build_ms(make_batch, count: int = 10) -> float:
    start = time.perf_counter()
    for step in range(count):
        make_batch(step, 0)
    return 1000 * (time.perf_counter() - start) / count


def seek_times(args, shards) -> tuple[list[dict], dict]:
    """Time to the first batch of a stream started at early and late optimizer steps."""
    from pipeline.shards import ShardReader
    from pipeline.stages.pretrain import build_task
    from pipeline.train import batches, make_accelerator

    setup = PretrainSetup(shards, "bert", args.size, args.batch_size, grad_accum=1)
    cfg = pretrain_config(setup, Variant(), workspace.CACHE_DIR / "seek-run", max_steps=10**9)
    accelerator = make_accelerator(cfg.train, cfg.output_dir, log=False)
    task, train = build_task(cfg, accelerator)
    num_samples = len(ShardReader(shards, "train"))
    steps_per_epoch = num_samples / train.global_batch(accelerator.num_processes)
    rows = []
    for step in (0, 1_000, 100_000, 10_000_000, 1_000_000_000):
        batches.epoch_order.cache_clear()
        start = time.perf_counter()
        stream = batches.micro_batch_stream(task.make_batch, step, 1, cfg.train.prefetch)
        next(stream)
        seconds = time.perf_counter() - start
        stream.close()
        rows.append({"step": step, "epoch": step / steps_per_epoch, "seek_s": seconds})
        print(
            f"seek to step {step:,} (epoch {step / steps_per_epoch:,.1f}): {seconds * 1000:.1f} ms",
            flush=True,
        )
    return rows, {"make_batch_ms": batch_build_ms(task.make_batch), "num_samples": num_samples}


def permutation_costs(sizes=(10**6, 10**7, 10**10), batch: int = 32) -> list[dict]:
    """What a seek pays as the corpus grows: the samples of one batch deep into an epoch, from the
    keyed order (``pipeline.train.batches.epoch_order``, per position) and from a materialised
    permutation (``numpy`` ``permutation(N)``, what the loop used before issue #15: O(N) time and
    8N bytes, once per epoch and per resume; not run where it would not fit in memory)."""
    import numpy as np

    from pipeline.train import batches

    rows = []
    positions = np.arange(batch, dtype=np.int64)
    batches.epoch_order(10, 0, 0)(positions[:1])  # first-call costs (imports) are not the order's
    for n in sizes:
        batches.epoch_order.cache_clear()
        start = time.perf_counter()
        batches.epoch_order(n, 0, 1)(positions + n // 2)
        keyed = time.perf_counter() - start
        materialised = None
        if n <= 10**7:
            start = time.perf_counter()
            np.random.default_rng([0, 1]).permutation(n)[positions + n // 2]
            materialised = time.perf_counter() - start
        rows.append(
            {
                "sequences": n,
                "tokens_at_seq128": n * 128,
                "keyed_s": keyed,
                "materialised_s": materialised,
                "materialised_bytes": 8 * n,
            }
        )
        print(f"{n:,} sequences: keyed order {keyed * 1e3:.2f} ms, materialised {materialised} s", flush=True)
    batches.epoch_order.cache_clear()
    return rows


def wait_rows(args, shards) -> tuple[list[dict], list[dict]]:
    """(median per prefetch setting, every run): prefetch 4 and 0 alternating, ``args.rounds`` times."""
    runs = []
    for _ in range(args.rounds):
        for prefetch in (4, 0):
            runs.append(wait_fraction(args, shards, prefetch))
            print(
                f"prefetch={prefetch}: wait {runs[-1]['wait_fraction']:.2%} of step time "
                f"({runs[-1]['wait_ms_per_step']:.1f} ms/step, step {runs[-1]['step_s']:.2f} s)",
                flush=True,
            )
    rows = []
    for prefetch in (4, 0):
        mine = [r for r in runs if r["prefetch"] == prefetch]
        rows.append(
            {key: median(r[key] for r in mine) for key in mine[0] if key != "prefetch"}
            | {"prefetch": prefetch}
        )
    return rows, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(VOCAB), default="mini")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    machine = machine_info()
    shards = workspace.shards(VOCAB[args.size])
    rows, runs = wait_rows(args, shards)
    seeks, extra = seek_times(args, shards)
    wait_table = print_table(
        f"Time blocked waiting for data, BERT {args.size} fp32, batch {args.batch_size} x 128, {machine['cpu']}",
        rows,
        [
            ("prefetch", "train.prefetch", ""),
            ("step_s", "step s", ".2f"),
            ("wait_ms_per_step", "wait ms/step", ".2f"),
            ("max_wait_ms", "max wait ms", ".1f"),
            ("wait_fraction", "wait / step time", ".2%"),
        ],
    )
    print(f"building one micro-batch (memmap read + masking) takes {extra['make_batch_ms']:.1f} ms")
    seek_table = print_table(
        f"Resume seek: stream created at step k -> first batch ({extra['num_samples']:,} sequences/epoch)",
        seeks,
        [("step", "optimizer step k", ","), ("epoch", "epoch", ",.1f"), ("seek_s", "seek s", ".4f")],
    )
    scale_table = print_table(
        "Seek cost as the corpus grows: one batch's samples, keyed order vs a materialised permutation",
        permutation_costs(),
        [
            ("sequences", "sequences in the split", ","),
            ("tokens_at_seq128", "tokens (seq 128)", ","),
            ("keyed_s", "keyed order s", ".5f"),
            ("materialised_s", "materialised permutation s", ".2f"),
            ("materialised_bytes", "its size, bytes", ","),
        ],
    )
    tables = wait_table + seek_table + scale_table
    payload = {
        "settings": vars(args),
        "wait": rows,
        "wait_runs": runs,
        "seek": seeks,
        **extra,
        "table": tables,
    }
    write_results("dataloader_overhead", payload, machine)


if __name__ == "__main__":
    main()
