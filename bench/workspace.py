"""Benchmark inputs built once and cached: the corpus, WordPiece tokenizers and shard sets.

Everything is made by the pipeline's own stages (``pipeline tokenizer``, ``pipeline shard``) under
``$PIPELINE_BENCH_CACHE`` (default ``/tmp/pipeline-bench``), and reused by later runs.  The corpus
is WikiText-2 (``$PIPELINE_DATA/wikitext-2/train.txt``); where it is absent (e.g. a bare GPU node)
a deterministic synthetic corpus of the same size stands in and results say so.  Not run directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from bench.common import CACHE_DIR, DATA_DIR
from pipeline.cli import main as pipeline_main

SYNTHETIC_BYTES = 11_000_000  # about WikiText-2's train split


def corpus() -> tuple[Path, str]:
    """(text file, name): WikiText-2 train, or the synthetic stand-in."""
    wikitext = DATA_DIR / "wikitext-2" / "train.txt"
    if wikitext.is_file():
        return wikitext, "wikitext-2 train"
    path = CACHE_DIR / "synthetic.txt"
    if not path.is_file():
        _write_synthetic(path)
    return path, "synthetic (WikiText-2 not found)"


def _write_synthetic(path: Path) -> None:
    """Zipf-distributed made-up words in paragraphs of 20-200 words: deterministic, tokenizer-friendly."""
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(30000)]
    lines, size = [], 0
    while size < SYNTHETIC_BYTES:
        ids = np.minimum(rng.zipf(1.2, size=int(rng.integers(20, 200))), len(words)) - 1
        line = " ".join(words[i] for i in ids) + " ."
        lines.append(line)
        size += len(line) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def _build(out: Path, argv: list[str]) -> Path:
    """Run a pipeline stage into ``out`` unless a previous run completed it."""
    marker = out / ".bench-complete"
    if marker.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    if pipeline_main(argv + [f"output_dir={out}"]) != 0:
        raise SystemExit(f"building {out} failed: {' '.join(argv)}")
    marker.touch()
    return out


def tokenizer(vocab_size: int) -> Path:
    """An uncased WordPiece tokenizer of ``vocab_size`` trained on the corpus."""
    text, _ = corpus()
    return _build(
        CACHE_DIR / f"tokenizer-wp{vocab_size}",
        [
            "tokenizer",
            f"input=[{text}]",
            "model_type=wordpiece",
            f"vocab_size={vocab_size}",
            "lowercase=true",
            "min_frequency=1",
            "corpus.doc_boundary=line",
        ],
    )


def shards(vocab_size: int, seq_len: int = 128) -> Path:
    """The corpus packed into ``seq_len`` rows by ``pipeline shard`` (1% validation)."""
    text, _ = corpus()
    return _build(
        CACHE_DIR / f"shards-wp{vocab_size}-{seq_len}",
        [
            "shard",
            f"input=[{text}]",
            f"tokenizer={tokenizer(vocab_size)}",
            f"seq_len={seq_len}",
            "val_fraction=0.01",
            "progress=false",
            "corpus.doc_boundary=line",
        ],
    )
