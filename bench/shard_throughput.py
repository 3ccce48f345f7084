"""Preprocessing throughput: ``pipeline shard`` vs the Hugging Face run_mlm_no_trainer preprocessing.

Run from the repository root (the venv active):

    python -m bench.shard_throughput                  # corpora of ~5 and ~50 MB (~6 min on 2 cores)
    python -m bench.shard_throughput --sizes 10,100   # the issue's ~10 / ~100 MB (~15 min)
    python -m bench.shard_throughput --sides ours,hf --sizes 20   # a subset of the sides

WikiText-2's train split is repeated into one text file of about each size (in a temporary
directory).  Each side runs as its own subprocess, the sides alternating within a round, all with
2 worker processes and the same 8k WordPiece tokenizer, sequence length 128:

* ``ours``: ``python -m pipeline shard input=[FILE] ... num_proc=2`` (tokenize, pack, write memmap
  shards, manifest, sha256 verification of every shard - the stage's defaults);
* ``ours-per-doc``: the same with ``fast_encode=false`` (every document encoded on its own, as
  before issue #15; the row shows what encoding distinct words once gives);
* ``ours-before``: ``ours-per-doc`` after loading the tokenizer with ``AutoTokenizer`` first, with
  batches of 1000 documents, as the stage ran before issue #15 (the row shows what dropping the
  ``transformers`` import gives);
* ``hf``: ``load_dataset("text")`` -> ``map(tokenize, batched=True, num_proc=2)`` ->
  ``map(group_texts, batched=True, num_proc=2)`` -> ``save_to_disk`` (``bench.hf_recipes.mlm_dataset``).

Two more sides are the ceilings: the encoder alone, reading the same lines in batches of the
stage's ``batch_size`` (4000) on ``NUM_PROC`` single-threaded worker processes and discarding the
ids (no reading of formats, packing, writing or hashing).  ``tokenize`` encodes document by document (``encode_batch_fast``,
the ceiling of ``ours-per-doc``, ``ours-before`` and of any pipeline built on that call);
``tokenize-words`` runs our ``IdEncoder`` (the ceiling of ``ours``).  How close a pipeline gets to
its ceiling shows what is left to win outside the encoder.

Reported: MB/s of raw text (wall clock of the whole subprocess, imports included), CPU seconds of
the subprocess and its reaped workers (steadier than wall time on a shared machine), the peak RSS
of the largest single process and of the whole process tree (sum over the parent and its
workers), both sampled, and how much the tree's peak grows with a larger corpus.  Writes ``bench/results/shard_throughput.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine_info, median, print_table, quiet_environment, ratio, write_results

quiet_environment()

import psutil  # noqa: E402

from bench import workspace  # noqa: E402
from pipeline.shards import ShardConfig  # noqa: E402

SEQ_LEN, VOCAB, NUM_PROC = 128, 8000, 2
# documents per encoder call in the ceilings: the stage's default, so tokenize-words dedupes like ours
BATCH = next(f.default for f in dataclasses.fields(ShardConfig) if f.name == "batch_size")
# side -> the ceiling it is compared with (the encoder alone, doing what that side's encoder does)
SIDES = {
    "ours": "tokenize-words",
    "ours-per-doc": "tokenize",
    "ours-before": "tokenize",
    "hf": "tokenize",
    "tokenize": "tokenize",
    "tokenize-words": "tokenize-words",
}
_ENCODE = None  # set in each worker of tokenize_child


def make_corpus(directory: Path, megabytes: float) -> Path:
    """WikiText-2 train repeated (whole copies, then a line-aligned part) to ~``megabytes`` MB."""
    text = workspace.corpus()[0].read_bytes()
    target = int(megabytes * 1e6)
    path = directory / f"corpus-{megabytes:g}mb.txt"
    with open(path, "wb") as f:
        written = 0
        while written < target:
            part = text[: target - written]
            if len(part) < len(text):
                part = part[: part.rfind(b"\n") + 1] or part
            f.write(part)
            written += len(part)
    return path


def run_measured(argv: list[str]) -> dict:
    """Run ``argv``: wall time, CPU time of the child and its reaped workers (``wait4`` rusage), and
    peak RSS sampled every 0.05 s: of the largest single process (its kernel high-water mark,
    ``VmHWM``; rusage's ``ru_maxrss`` would inherit this benchmark's own size through fork) and of
    the whole process tree (sum over all members)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        root, tree_peak, high_water = psutil.Process(proc.pid), 0, {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                members = [root, *root.children(recursive=True)]
                tree_peak = max(tree_peak, sum(_rss(p) for p in members))
                high_water.update({p.pid: max(high_water.get(p.pid, 0), _high_water(p.pid)) for p in members})
            except psutil.Error:
                pass
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(
                f"{' '.join(argv)} failed ({proc.returncode}):\n{log.read().decode(errors='replace')[-3000:]}"
            )
    return {
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_process_rss_mb": max(high_water.values(), default=0) / 2**20,
        "tree_peak_rss_mb": tree_peak / 2**20,
    }


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def _high_water(pid: int) -> int:
    """Peak resident set of a live process in bytes (``VmHWM`` of /proc/PID/status), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return 0


def side_argv(side: str, corpus: Path, out: Path) -> list[str]:
    if side in ("hf", "tokenize", "tokenize-words", "ours-before"):
        return [sys.executable, "-m", "bench.shard_throughput", "--child", side, str(corpus), str(out)]
    stage = [f"input=[{corpus}]", f"tokenizer={workspace.tokenizer(VOCAB)}", f"output_dir={out}"]
    stage += [f"seq_len={SEQ_LEN}", "val_fraction=0.01", f"num_proc={NUM_PROC}", "progress=false"]
    stage += ["corpus.doc_boundary=line", f"fast_encode={side == 'ours'}"]
    return [sys.executable, "-m", "pipeline", "shard", *stage]


def _init_worker(by_words: bool) -> None:
    global _ENCODE
    from pipeline.text import IdEncoder

    tokenizer = (workspace.tokenizer(VOCAB) / "tokenizer.json").read_text(encoding="utf-8")
    _ENCODE = IdEncoder(tokenizer, by_words=by_words).encode


def _encode_lines(lines: list[str]) -> int:
    return int(_ENCODE([line.rstrip("\r\n") for line in lines])[1].sum())


def tokenize_child(corpus: str, out: str, by_words: bool) -> None:
    """The encoder alone: encode every line, NUM_PROC worker processes, nothing kept."""
    import itertools
    import multiprocessing

    with (
        open(corpus, encoding="utf-8") as f,
        multiprocessing.Pool(NUM_PROC, _init_worker, (by_words,)) as pool,
    ):
        batches = iter(lambda: list(itertools.islice(f, BATCH)), [])
        tokens = sum(pool.imap(_encode_lines, batches, chunksize=4))
    Path(out).write_text(f"{tokens}\n")


def hf_child(corpus: str, out: str) -> None:
    """The HF preprocessing, run in its own process (the datasets cache lives next to the output)."""
    from transformers import AutoTokenizer

    from bench.hf_recipes import mlm_dataset

    tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(VOCAB))
    dataset = mlm_dataset(tokenizer, Path(corpus), SEQ_LEN, num_proc=NUM_PROC, cache_dir=f"{out}-cache")
    dataset.save_to_disk(out)


def ours_before_child(corpus: str, out: str) -> None:
    """The stage as it ran before issue #15: the tokenizer loaded through ``transformers`` first,
    then every document encoded on its own."""
    from transformers import AutoTokenizer

    from pipeline.cli import main

    AutoTokenizer.from_pretrained(workspace.tokenizer(VOCAB))
    stage = side_argv("ours-per-doc", Path(corpus), Path(out))[4:] + ["batch_size=1000"]  # its default
    if main(["shard", *stage]) != 0:
        raise SystemExit(1)


def run_child(side: str, corpus: str, out: str) -> None:
    children = {"hf": hf_child, "ours-before": ours_before_child}
    children.get(side, lambda *a: tokenize_child(*a, by_words=side == "tokenize-words"))(corpus, out)


def measure(side: str, corpus: Path, work: Path) -> dict:
    out = work / f"{side}-{corpus.stem}"
    result = run_measured(side_argv(side, corpus, out))
    size = corpus.stat().st_size
    result.update({"side": side, "corpus_mb": size / 1e6, "mb_per_s": size / 1e6 / result["seconds"]})
    for path in (out, Path(f"{out}-cache")):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    print(
        f"{side:14s} {result['corpus_mb']:6.1f} MB: {result['seconds']:6.1f} s, {result['mb_per_s']:.2f} MB/s, "
        f"{result['cpu_s']:6.1f} CPU s, peak RSS {result['max_process_rss_mb']:.0f} MB (one process), "
        f"{result['tree_peak_rss_mb']:.0f} MB (tree)",
        flush=True,
    )
    return result


KEYS = ("corpus_mb", "seconds", "cpu_s", "mb_per_s", "max_process_rss_mb", "tree_peak_rss_mb")
COLUMNS = [
    ("side", "side", ""),
    ("corpus_mb", "corpus MB", ".1f"),
    ("seconds", "wall s", ".1f"),
    ("mb_per_s", "MB/s", ".2f"),
    ("speedup_vs_hf", "x HF (wall)", ".2f"),
    ("cpu_s", "CPU s", ".1f"),
    ("cpu_speedup_vs_hf", "x HF (CPU s)", ".2f"),
    ("of_ceiling", "of its encoder-only MB/s", ".0%"),
    ("max_process_rss_mb", "peak RSS largest process MB", ".0f"),
    ("tree_peak_rss_mb", "peak RSS process tree MB", ".0f"),
    ("tree_rss_vs_smallest", "tree RSS vs smallest corpus", ".2f"),
]


def summarize(results: list[dict], sizes: list[float], sides: list[str]) -> list[dict]:
    """Median over rounds per (side, size), with ratios to HF and to the side's ceiling."""
    rows = []
    for corpus_mb in sizes:
        for side in sides:
            runs = [
                r for r in results if r["side"] == side and abs(r["corpus_mb"] - corpus_mb) / corpus_mb < 0.05
            ]
            rows.append({"side": side, **{key: median(r[key] for r in runs) for key in KEYS}})
    for row in rows:
        same_size = {r["side"]: r for r in rows if r["corpus_mb"] == row["corpus_mb"]}
        hf, ceiling = same_size.get("hf", {}), same_size.get(SIDES[row["side"]], {})
        smallest = next(r for r in rows if r["side"] == row["side"])
        row["speedup_vs_hf"] = ratio(row["mb_per_s"], hf.get("mb_per_s", float("nan")))
        row["cpu_speedup_vs_hf"] = ratio(hf.get("cpu_s", float("nan")), row["cpu_s"])
        row["of_ceiling"] = ratio(row["mb_per_s"], ceiling.get("mb_per_s", float("nan")))
        row["tree_rss_vs_smallest"] = ratio(row["tree_peak_rss_mb"], smallest["tree_peak_rss_mb"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="5,50", help="corpus sizes in MB, comma-separated (smallest first)"
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    sides = args.sides.split(",")
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(unknown)}; known: {', '.join(SIDES)}")
    machine = machine_info()
    workspace.tokenizer(VOCAB)
    sizes = [float(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        work = Path(tmp)
        corpora = [make_corpus(work, mb) for mb in sizes]
        for _ in range(args.rounds):
            for corpus in corpora:
                for side in sides:
                    results.append(measure(side, corpus, work))
    rows = summarize(results, sizes, sides)
    table = print_table(
        f"Sharding WikiText-2 x N into seq {SEQ_LEN}, {NUM_PROC} processes each, {machine['cpu']}",
        rows,
        COLUMNS,
    )
    write_results(
        "shard_throughput", {"settings": vars(args), "rows": rows, "runs": results, "table": table}, machine
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
