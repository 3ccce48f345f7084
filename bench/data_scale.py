"""The pretraining data path at 10^10 sequences, simulated: open the set, plan, seek to step 10^8, read.

Run from the repository root (the venv active):

    python -m bench.data_scale                          # 10^10 x 128 tokens, 65,536 per file (~1 min)
    python -m bench.data_scale --shard-size 2097152     # the same corpus in 4,769 larger files

A 1.28T-token corpus does not fit on this machine, so it is simulated where only its size matters:
a shard set whose ``manifest.json``, index and tokenizer copy are real and whose shard files are
sparse (each has its full size, its bytes are holes that read as zeros and use no disk; the index
holds their true sha256).  With the default ``shard_size`` that is 152,588 files, more than this
machine's open-file limit and twice its limit on memory maps (``vm.max_map_count``).

Then, in a fresh process per row (so that its memory is its own), the pretraining data path as
``pipeline pretrain`` runs it: ``ShardReader(set, "train")``, a ``GlobalBatchPlan`` for 8 processes
of 32 sequences, the samples of rank 0's micro-batch at optimizer step ``--step``, and
``reader.take`` of them.  Rows for 10^7 and 10^10 sequences show what grows with the corpus:
time to open, to seek, to read, and the process's resident memory before and after (``VmHWM``:
its peak).  The next step's batch is also read with ``random_access=False`` (the kernel reads
ahead around each row, as it does for a plain ``np.memmap``): rows that are not in the page cache
cost a read-ahead window each (on these sparse files the window is zero-filled, not read).  Before issue #15 the seek built the epoch's permutation (8 bytes per sequence: 80 GB
here, see ``bench.dataloader_overhead``) and opening listed every file in ``manifest.json``.

Writes ``bench/results/data_scale.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine_info, print_table, quiet_environment, write_results

quiet_environment()

SEQ_LEN, PROCESSES, BATCH = 128, 8, 32
_ZEROS = bytes(1 << 20)


def _zero_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // len(_ZEROS)):
        digest.update(_ZEROS)
    digest.update(bytes(size % len(_ZEROS)))
    return digest.hexdigest()


def simulated_set(out: Path, sequences: int, shard_size: int, tokenizer: Path) -> Path:
    """A format-2 shard set of ``sequences`` zero rows of SEQ_LEN uint16 tokens in sparse files."""
    from pipeline.io import sha256_file
    from pipeline.shards import FORMAT_VERSION
    from pipeline.shards.format import index_file_name, shard_file_name

    out.mkdir(parents=True)
    shutil.copytree(tokenizer, out / "tokenizer")
    num_shards = -(-sequences // shard_size)
    row_bytes = SEQ_LEN * 2
    sizes = {shard_size: None, sequences - (num_shards - 1) * shard_size: None}
    sizes = {rows: _zero_sha256(rows * row_bytes) for rows in sizes}
    with open(out / index_file_name("train"), "w", encoding="utf-8") as index:
        for shard in range(num_shards):
            rows = min(shard_size, sequences - shard * shard_size)
            with open(out / shard_file_name("train", shard), "wb") as f:
                f.truncate(rows * row_bytes)  # a hole: the right size, no disk
            index.write(f"{shard_file_name('train', shard)}\t{rows}\t{sizes[rows]}\n")
    split = {
        "num_documents": sequences,
        "num_tokens": sequences * SEQ_LEN,
        "num_sequences": sequences,
        "padding_fraction": 0.0,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "index": {"file": index_file_name("train"), "sha256": sha256_file(out / index_file_name("train"))},
    }
    ids = {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4}
    tokenizer_info = {"dir": "tokenizer", "sha256": sha256_file(out / "tokenizer" / "tokenizer.json")}
    manifest = {
        "format_version": FORMAT_VERSION,
        "seq_len": SEQ_LEN,
        "dtype": "uint16",
        "tokenizer": {**tokenizer_info, "vocab_size": 8000, **ids},
        "splits": {"train": split},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _memory_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def child(shards: str, step: int) -> None:
    """Open, plan, seek and read in this (fresh) process; print the measurements as JSON."""
    from pipeline.shards import ShardReader
    from pipeline.train import GlobalBatchPlan

    before_rss, before_peak = _memory_mb()
    start = time.perf_counter()
    reader = ShardReader(shards, "train")
    opened = time.perf_counter()
    plan = GlobalBatchPlan(len(reader), BATCH, 1, PROCESSES, 0, seed=0)
    samples = plan.samples(plan.positions(step, 0))
    planned = time.perf_counter()
    rows = reader.take(samples)
    read = time.perf_counter()
    after_rss, after_peak = _memory_mb()
    # the next step's batch (other rows, not cached) through a reader that lets the kernel read ahead
    readahead = ShardReader(shards, "train", random_access=False)
    start_readahead = time.perf_counter()
    readahead.take(plan.samples(plan.positions(step + 1, 0)))
    readahead_s = time.perf_counter() - start_readahead
    result = {
        "sequences": len(reader),
        "shard_files": reader.layout.num_shards,
        "step": step,
        "epoch": step * plan.global_batch / len(reader),
        "open_s": opened - start,
        "seek_s": planned - opened,
        "read_s": read - planned,
        "read_with_readahead_s": readahead_s,
        "total_s": read - start,
        "batch_shape": list(rows.shape),
        "distinct_samples": len(set(samples.tolist())),
        "open_maps": len(reader._maps),
        "rss_before_mb": before_rss,
        "peak_rss_before_mb": before_peak,
        "peak_rss_after_mb": after_peak,
        "rss_growth_mb": after_rss - before_rss,
    }
    print(json.dumps(result))


def measure(shards: Path, step: int) -> dict:
    argv = [sys.executable, "-m", "bench.data_scale", "--child", str(shards), str(step)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_all(args, tokenizer: Path) -> list[dict]:
    """One row per corpus size: build its simulated set, measure it in a fresh process, delete it."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work_dir) as tmp:
        for sequences in map(int, args.sequences.split(",")):
            start = time.perf_counter()
            shards = simulated_set(Path(tmp) / f"set-{sequences}", sequences, args.shard_size, tokenizer)
            row = {**measure(shards, args.step), "create_s": time.perf_counter() - start}
            rows.append(row)
            print(
                f"{sequences:,} sequences in {row['shard_files']:,} files: open {row['open_s'] * 1e3:.1f} ms, "
                f"seek {row['seek_s'] * 1e3:.2f} ms, read {row['read_s'] * 1e3:.1f} ms, "
                f"RSS +{row['rss_growth_mb']:.1f} MB (peak {row['peak_rss_after_mb']:.0f} MB)",
                flush=True,
            )
            shutil.rmtree(shards)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", default="10000000,10000000000", help="comma-separated corpus sizes")
    parser.add_argument("--shard-size", type=int, default=65536, help="sequences per shard file")
    parser.add_argument("--step", type=int, default=10**8, help="optimizer step to seek to")
    parser.add_argument(
        "--tokenizer", help="tokenizer directory to bundle (default: the benchmarks' 8k WordPiece)"
    )
    parser.add_argument("--work-dir", help="where the sparse sets go (default: a temporary directory)")
    parser.add_argument("--child", nargs=2, metavar=("SHARDS", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    machine = machine_info()
    if args.tokenizer:
        tokenizer = Path(args.tokenizer)
    else:
        from bench import workspace

        tokenizer = workspace.tokenizer(8000)
    rows = measure_all(args, tokenizer)
    table = print_table(
        f"Open + plan + seek to step {args.step:,} + read a batch ({PROCESSES} x {BATCH} x {SEQ_LEN}), "
        f"{machine['cpu']}",
        rows,
        [
            ("sequences", "sequences", ","),
            ("shard_files", "shard files", ","),
            ("epoch", "epoch of the step", ".2f"),
            ("open_s", "open s", ".4f"),
            ("seek_s", "seek s", ".5f"),
            ("read_s", "read s", ".4f"),
            ("read_with_readahead_s", "read s, kernel read-ahead on", ".4f"),
            ("rss_growth_mb", "RSS growth MB", ".1f"),
            ("peak_rss_after_mb", "peak RSS MB (torch imported)", ".0f"),
        ],
    )
    write_results("data_scale", {"settings": vars(args), "rows": rows, "table": table}, machine)


if __name__ == "__main__":
    main()
