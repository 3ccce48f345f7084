"""Fine-tuning test data and a fast `pipeline finetune` call (tests/finetune/, tests/test_bad_input.py).

``write_sentiment`` writes a learnable sentiment table (label 1 iff the sentence mentions 'cat'),
``write_conll`` a CoNLL NER file; ``finetune(out, *overrides)`` runs the stage with fast settings
(``FAST``); ``read_table`` / ``hf_logits`` recompute predictions with transformers alone.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from pipeline.cli import main
from tests.helpers.loop import reset_accelerate

FAST = [
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.warmup_steps=3",
    "train.log_every=5",
    "train.progress=false",
    "train.peak_tflops=1",
    "train.save_every=0",
    "model.classifier_dropout=0.0",
]
WORDS = ["cat", "dog", "bird", "ball", "tree", "house", "car", "apple", "river", "park"]


def finetune(out: Path, *args: str) -> int:
    reset_accelerate()
    return main(["finetune", f"output_dir={out}", *FAST, *args])


def sentence(rng: random.Random, with_word: str | None = None) -> str:
    words = [rng.choice(WORDS[2:]) for _ in range(rng.randint(4, 8))]
    if with_word:
        words.insert(rng.randrange(len(words)), with_word)
    return "the " + " ".join(words) + " ."


def write_sentiment(path: Path, n: int, seed: int) -> Path:
    """label = 1 if the sentence mentions 'cat', 0 if 'dog': learnable in a few dozen steps."""
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append(f"{sentence(rng, 'cat' if label else 'dog')}\t{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def results(out: Path) -> dict:
    return json.loads((out / "eval_results.json").read_text())


def read_table(path: Path, text_columns: tuple[str, ...] = ("sentence",), label: str | None = "label"):
    """``(texts per column, labels)`` of a small tsv/csv written by these helpers (no quoting)."""
    sep = "\t" if path.suffix == ".tsv" else ","
    header, *rows = [line.split(sep) for line in path.read_text(encoding="utf-8").splitlines() if line]
    columns = [[row[header.index(c)] for row in rows] for c in text_columns]
    labels = [row[header.index(label)] for row in rows] if label else None
    return columns, labels


def hf_logits(model_dir: Path, columns: list[list[str]]) -> np.ndarray:
    """Logits of an exported classifier/regressor, computed by transformers alone (one example at a
    time: no padding), to check the pipeline's own evaluation against."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    with torch.no_grad():
        for example in zip(*columns):
            out.append(model(**tokenizer(*example, return_tensors="pt")).logits[0].numpy())
    return np.stack(out)


def write_conll(path: Path, scheme: str, n: int = 120, seed: int = 0) -> Path:
    """Sentences with PER ('alice bob') and LOC ('paris') entities, adjacent same-type spans included."""
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O O", ""]
    for _ in range(n):
        tokens = []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.2:
                tokens.append([("alice", "PER"), ("bob", "PER")])
            elif r < 0.3:
                tokens.append([("paris", "LOC")])
            else:
                tokens.append([(rng.choice(WORDS), "O")])
        previous = "O"
        for entity in tokens:
            kind = entity[0][1]
            for i, (word, _) in enumerate(entity):
                if kind == "O":
                    tag = "O"
                elif i == 0 and (scheme == "iob2" or previous == kind):
                    tag = f"B-{kind}"
                else:
                    tag = f"I-{kind}"
                lines.append(f"{word} NN O {tag}")
            previous = kind
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path
