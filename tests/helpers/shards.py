"""Shared helpers of the shard tests (tests/shards/): a tiny WordPiece tokenizer, synthetic
corpora, a config builder, byte-level comparison of shard sets and a converter to format version 1."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from pipeline.config import from_dict
from pipeline.shards import ShardReader, build_shards
from pipeline.stages.shard import Config

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ru", "so", "ti") for b in ("", "n", "r", "st", "ple")
]


def save_tokenizer(tok: Tokenizer, directory: Path, max_length: int = 512) -> Path:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    fast.save_pretrained(str(directory))
    return directory


def write_corpus(path: Path, docs: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) for _ in range(docs)]
    lines[docs // 2] = "\x01\x02"  # a document that tokenizes to nothing: it must be dropped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_wordpiece(directory: Path) -> Path:
    """A 120-token WordPiece tokenizer over WORDS (decodes back to the input text)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    rng = random.Random(1)
    text = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(300)]
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS))
    return save_tokenizer(tok, directory)


CORPUS_DOCS = (300, 120, 200)  # documents per input file


def small_corpus(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    return [write_corpus(root / f"part{i}.txt", docs, seed=i) for i, docs in enumerate(CORPUS_DOCS)]


def make_config(inputs, tokenizer, out, **overrides) -> Config:
    values = {
        "input": [str(p) for p in inputs],
        "tokenizer": str(tokenizer),
        "output_dir": str(out),
        "seq_len": 32,
        "val_fraction": 0.2,
        "seed": 3,
        "shard_size": 50,
        "docs_per_unit": 64,
        "batch_size": 16,
        "num_proc": 1,
        "progress": False,
    }
    values.update(overrides)
    return from_dict(Config, values)


def shard(inputs, tokenizer, out, **overrides):
    return build_shards(make_config(inputs, tokenizer, out, **overrides))


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file of a shard set except the run-specific config.yaml (it names output_dir)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "config.yaml"
    }


def unpack(reader: ShardReader) -> list[list[int]]:
    """Invert the packing rule: the documents (token lists) of a split."""
    ids = reader.special_ids
    rows = reader.take(np.arange(len(reader)))
    assert (rows[:, 0] == ids["cls_id"]).all()
    stream: list[int] = []
    for row in rows:
        body = row[1:]
        body = body[body != ids["pad_id"]] if row[-1] == ids["pad_id"] else body
        assert body[-1] == ids["sep_id"]
        stream.extend(body[:-1].tolist())
    docs, current = [], []
    for token in stream:
        if token == ids["sep_id"]:
            docs.append(current)
            current = []
        else:
            current.append(token)
    return [*docs, current]


def to_version_1(source: Path, target: Path) -> Path:
    """A copy of a shard set as format version 1 wrote it: per-shard records in manifest.json, no
    index files, no token statistics."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format_version"] = 1
    for info in manifest["splits"].values():
        index = target / info["index"]["file"]
        lines = [line.split("\t") for line in index.read_text().splitlines()]
        index.unlink()
        for key in ("shard_size", "num_shards", "index", "unigram_entropy", "top_token_fraction"):
            del info[key]
        info["shards"] = [{"file": f, "num_sequences": int(n), "sha256": h} for f, n, h in lines]
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target
