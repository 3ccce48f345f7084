"""Preprocessing throughput: ``pipeline shard`` vs the Hugging Face run_mlm_no_trainer preprocessing.

Run from the repository root (the venv active):

    python -m bench.shard_throughput                  # corpora of ~5 and ~50 MB (~5 min on 2 cores)
    python -m bench.shard_throughput --sizes 10,100   # the issue's ~10 / ~100 MB (~15 min)

WikiText-2's train split is repeated into one text file of about each size (in a temporary
directory).  Each side runs as its own subprocess, alternating (ours, HF, ours, HF, ...), both with
2 worker processes and the same 8k WordPiece tokenizer, sequence length 128:

* ours: ``python -m pipeline shard input=[FILE] ... num_proc=2`` (tokenize, pack, write memmap
  shards, manifest, sha256 verification of every shard - the stage's defaults);
* HF:   ``load_dataset("text")`` -> ``map(tokenize, batched=True, num_proc=2)`` ->
  ``map(group_texts, batched=True, num_proc=2)`` -> ``save_to_disk`` (``bench.hf_recipes.mlm_dataset``).

A third side, ``tokenize``, is the ceiling both share: the same fast tokenizer encoding the same
lines in batches of 1000 on ``NUM_PROC`` single-threaded worker processes and discarding the ids
(no reading of formats, packing, writing or hashing) - how close "ours" gets to it shows what is
left to win outside the tokenizer.

Reported: MB/s of raw text (wall clock of the whole subprocess, imports included), the peak RSS
of the largest single process (``wait4`` rusage) and of the whole process tree (sum over the
parent and its workers, sampled every 0.1 s), and how much the tree's peak grows with a 10x larger
corpus.  Writes ``bench/results/shard_throughput.json``.
"""

from __future__ import annotations

import argparse
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

SEQ_LEN, VOCAB, NUM_PROC = 128, 8000, 2


SIDES = ("ours", "hf", "tokenize")
_TOKENIZER = None  # set in each worker of tokenize_child


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
    """Run ``argv``: wall time, peak RSS of its largest process (``wait4`` rusage: the child and its
    reaped workers) and of the whole process tree (sum over all members, sampled every 0.1 s)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        root, tree_peak = psutil.Process(proc.pid), 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                tree_peak = max(tree_peak, sum(_rss(p) for p in [root, *root.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(
                f"{' '.join(argv)} failed ({proc.returncode}):\n{log.read().decode(errors='replace')[-3000:]}"
            )
    return {
        "seconds": seconds,
        "max_process_rss_mb": usage.ru_maxrss / 1024,
        "tree_peak_rss_mb": tree_peak / 2**20,
    }


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def ours_argv(corpus: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "shard",
        f"input=[{corpus}]",
        f"tokenizer={workspace.tokenizer(VOCAB)}",
        f"output_dir={out}",
        f"seq_len={SEQ_LEN}",
        "val_fraction=0.01",
        f"num_proc={NUM_PROC}",
        "progress=false",
        "corpus.doc_boundary=line",
    ]


def hf_argv(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.shard_throughput", "--hf-child", str(corpus), str(out)]


def tokenize_argv(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.shard_throughput", "--tokenize-child", str(corpus), str(out)]


def _encode_lines(lines: list[str]) -> int:
    return sum(len(e.ids) for e in _TOKENIZER.encode_batch_fast(lines, add_special_tokens=False))


def _init_tokenizer(path: str) -> None:
    global _TOKENIZER
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_file(path)


def tokenize_child(corpus: str, out: str) -> None:
    """The tokenizer alone: encode every line, NUM_PROC worker processes, nothing kept."""
    import itertools
    import multiprocessing

    path = str(workspace.tokenizer(VOCAB) / "tokenizer.json")
    with (
        open(corpus, encoding="utf-8") as f,
        multiprocessing.Pool(NUM_PROC, _init_tokenizer, (path,)) as pool,
    ):
        batches = iter(lambda: list(itertools.islice(f, 1000)), [])
        tokens = sum(pool.imap(_encode_lines, batches, chunksize=4))
    Path(out).write_text(f"{tokens}\n")


def hf_child(corpus: str, out: str) -> None:
    """The HF preprocessing, run in its own process (the datasets cache lives next to the output)."""
    from transformers import AutoTokenizer

    from bench.hf_recipes import mlm_dataset

    tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(VOCAB))
    dataset = mlm_dataset(tokenizer, Path(corpus), SEQ_LEN, num_proc=NUM_PROC, cache_dir=f"{out}-cache")
    dataset.save_to_disk(out)


def measure(side: str, corpus: Path, work: Path) -> dict:
    out = work / f"{side}-{corpus.stem}"
    argv = {"ours": ours_argv, "hf": hf_argv, "tokenize": tokenize_argv}[side](corpus, out)
    result = run_measured(argv)
    size = corpus.stat().st_size
    result.update({"side": side, "corpus_mb": size / 1e6, "mb_per_s": size / 1e6 / result["seconds"]})
    for path in (out, Path(f"{out}-cache")):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    print(
        f"{side:8s} {result['corpus_mb']:6.1f} MB: {result['seconds']:6.1f} s, {result['mb_per_s']:.2f} MB/s, "
        f"peak RSS {result['max_process_rss_mb']:.0f} MB (one process), {result['tree_peak_rss_mb']:.0f} MB (tree)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="5,50", help="corpus sizes in MB, comma-separated (smallest first)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hf-child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--tokenize-child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_child:
        hf_child(*args.hf_child)
        return
    if args.tokenize_child:
        tokenize_child(*args.tokenize_child)
        return
    machine = machine_info()
    workspace.tokenizer(VOCAB)
    sizes = [float(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        work = Path(tmp)
        corpora = [make_corpus(work, mb) for mb in sizes]
        for _ in range(args.rounds):
            for corpus in corpora:
                for side in SIDES:
                    results.append(measure(side, corpus, work))
    rows = []
    for corpus_mb in sizes:
        for side in SIDES:
            runs = [
                r for r in results if r["side"] == side and abs(r["corpus_mb"] - corpus_mb) / corpus_mb < 0.05
            ]
            rows.append(
                {
                    "side": side,
                    "corpus_mb": median(r["corpus_mb"] for r in runs),
                    "seconds": median(r["seconds"] for r in runs),
                    "mb_per_s": median(r["mb_per_s"] for r in runs),
                    "max_process_rss_mb": median(r["max_process_rss_mb"] for r in runs),
                    "tree_peak_rss_mb": median(r["tree_peak_rss_mb"] for r in runs),
                }
            )
    for row in rows:
        hf = next(r for r in rows if r["side"] == "hf" and r["corpus_mb"] == row["corpus_mb"])
        smallest = next(r for r in rows if r["side"] == row["side"])
        ceiling = next(r for r in rows if r["side"] == "tokenize" and r["corpus_mb"] == row["corpus_mb"])
        row["speedup_vs_hf"] = ratio(row["mb_per_s"], hf["mb_per_s"])
        row["of_tokenizer_ceiling"] = ratio(row["mb_per_s"], ceiling["mb_per_s"])
        row["tree_rss_vs_smallest"] = ratio(row["tree_peak_rss_mb"], smallest["tree_peak_rss_mb"])
    columns = [
        ("side", "side", ""),
        ("corpus_mb", "corpus MB", ".1f"),
        ("seconds", "wall s", ".1f"),
        ("mb_per_s", "MB/s", ".2f"),
        ("speedup_vs_hf", "x HF", ".2f"),
        ("of_tokenizer_ceiling", "of tokenizer-only MB/s", ".0%"),
        ("max_process_rss_mb", "peak RSS largest process MB", ".0f"),
        ("tree_peak_rss_mb", "peak RSS process tree MB", ".0f"),
        ("tree_rss_vs_smallest", "tree RSS vs smallest corpus", ".2f"),
    ]
    table = print_table(
        f"Sharding WikiText-2 x N into seq {SEQ_LEN}, {NUM_PROC} processes each, {machine['cpu']}",
        rows,
        columns,
    )
    write_results(
        "shard_throughput", {"settings": vars(args), "rows": rows, "runs": results, "table": table}, machine
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
