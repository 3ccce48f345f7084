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
   computation of global positions, plus that epoch's permutation) instead of replaying batches.
   Measured: from creating the stream at ``k`` to holding its first batch, for early and very late
   ``k`` (the permutation cache is cleared first, so each seek pays for its epoch's permutation),
   and the cost of that permutation for larger corpora (10^6 and 10^7 sequences).

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
        batches._permutation.cache_clear()
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


def permutation_costs(sizes=(10**6, 10**7)) -> list[dict]:
    """What a seek pays for larger corpora: the epoch permutation is computed whole (O(N) time and
    8N bytes), once per epoch and once per resume."""
    from pipeline.train import batches

    rows = []
    for n in sizes:
        batches._permutation.cache_clear()
        start = time.perf_counter()
        batches._permutation(n, 0, 1)
        rows.append(
            {"sequences": n, "tokens_at_seq128": n * 128, "permutation_s": time.perf_counter() - start}
        )
        print(f"epoch permutation of {n:,} sequences: {rows[-1]['permutation_s']:.2f} s", flush=True)
    batches._permutation.cache_clear()
    return rows


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
        "Seek cost that grows with the corpus: the epoch permutation",
        permutation_costs(),
        [
            ("sequences", "sequences in the split", ","),
            ("tokens_at_seq128", "tokens (seq 128)", ","),
            ("permutation_s", "permutation s", ".2f"),
        ],
    )
    write_results(
        "dataloader_overhead",
        {
            "settings": vars(args),
            "wait": rows,
            "wait_runs": runs,
            "seek": seeks,
            **extra,
            "table": wait_table + seek_table + scale_table,
        },
        machine,
    )


if __name__ == "__main__":
    main()
