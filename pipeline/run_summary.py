"""The closing table of ``pipeline run``: one line per fact a user wants after the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _last_eval(out: Path) -> dict:
    records = []
    path = out / "metrics.jsonl"
    if path.is_file():
        records = [json.loads(line) for line in path.read_text().splitlines() if '"eval/' in line]
    return records[-1] if records else {}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_rows(configs: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    tok_dir = Path(configs["tokenizer"].output_dir)
    if (tok_dir / "tokenizer.json").is_file():
        vocab = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])
        rows.append(("tokenizer", f"{configs['tokenizer'].model_type}, {vocab:,} tokens -> {tok_dir}"))
    manifest = Path(configs["shard"].output_dir) / "manifest.json"
    if manifest.is_file():
        totals = json.loads(manifest.read_text())["totals"]
        rows.append(
            (
                "shards",
                f"{totals['tokens']:,} tokens in {totals['sequences']:,} sequences -> {manifest.parent}",
            )
        )
    pre = Path(configs["pretrain"].output_dir)
    first_last = _eval_curve(pre)
    if first_last:
        rows.append(("pretrain eval loss", f"{first_last[0]:.4f} (first eval) -> {first_last[1]:.4f} (last)"))
        rows.append(("pretrain eval accuracy", _fmt(_last_eval(pre).get("eval/accuracy"))))
    results = Path(configs["finetune"].output_dir) / "eval_results.json"
    if results.is_file():
        for key, value in json.loads(results.read_text()).items():
            if key.count("/") == 1:
                rows.append((f"finetune {key}", _fmt(value)))
    rows.append(("tensorboard", f"tensorboard --logdir {Path(configs['pretrain'].output_dir).parent}"))
    return rows


def _eval_curve(out: Path) -> tuple[float, float] | None:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return None
    losses = [r["eval/loss"] for r in map(json.loads, path.read_text().splitlines()) if "eval/loss" in r]
    return (losses[0], losses[-1]) if losses else None
