"""The whole pipeline in one command: tokenizer -> shard -> pretrain -> finetune.

Run:
    pipeline run --config configs/quickstart.yaml
    pipeline run --config configs/quickstart.yaml corpus=[data/*.txt] finetune.data.train=...  (your own data)

Each section (``tokenizer``, ``shard``, ``pretrain``, ``finetune``) takes the keys of that stage
(``pipeline <stage> --help``) except the ones this command wires together: inputs, output
directories, ``shard.tokenizer``, ``pretrain.data.shards`` and ``finetune.model.init_from``.
Outputs go to ``<output_dir>/{tokenizer,shards,pretrain,finetune}``.  A stage whose output is
already complete is skipped, so rerunning after an interruption resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import console
from pipeline.config import REQUIRED, from_dict, merge, option, save_config, section
from pipeline.errors import ConfigError
from pipeline.finetune import RESULTS_FILE
from pipeline.shards import MANIFEST_NAME
from pipeline.stages import finetune, pretrain, shard, tokenizer
from pipeline.text import CorpusConfig

STAGE_ORDER = ("tokenizer", "shard", "pretrain", "finetune")
MODULES = {"tokenizer": tokenizer, "shard": shard, "pretrain": pretrain, "finetune": finetune}


@dataclass
class Config:
    output_dir: str = option(REQUIRED, "root directory; each stage writes to a subdirectory named after it")
    corpus: list[str] = option(
        REQUIRED, "pretraining text (files, globs or a hub dataset name) for tokenizer and shard"
    )
    corpus_format: CorpusConfig = section(CorpusConfig, "how the corpus is read (both tokenizer and shard)")
    stages: list[str] = option(list(STAGE_ORDER), "stages to run, in pipeline order")
    tokenizer: dict = option({}, "keys of `pipeline tokenizer` (input/output_dir are wired)")
    shard: dict = option({}, "keys of `pipeline shard` (input/tokenizer/output_dir are wired)")
    pretrain: dict = option({}, "keys of `pipeline pretrain` (data.shards/output_dir are wired)")
    finetune: dict = option({}, "keys of `pipeline finetune` (model.init_from/output_dir are wired)")

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in STAGE_ORDER]
        if unknown:
            raise ConfigError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGE_ORDER)}")
        stage_configs(self)  # type-check every section now, not after an hour of pretraining


def stage_configs(cfg: Config) -> dict[str, Any]:
    root = Path(cfg.output_dir)
    corpus = dataclasses.asdict(cfg.corpus_format)
    wired = {
        "tokenizer": {"input": cfg.corpus, "output_dir": str(root / "tokenizer"), "corpus": corpus},
        "shard": {
            "input": cfg.corpus,
            "tokenizer": str(root / "tokenizer"),
            "output_dir": str(root / "shards"),
            "corpus": corpus,
        },
        "pretrain": {"data": {"shards": str(root / "shards")}, "output_dir": str(root / "pretrain")},
        "finetune": {
            "model": {"init_from": str(root / "pretrain" / "final")},
            "output_dir": str(root / "finetune"),
        },
    }
    return {
        name: from_dict(MODULES[name].Config, merge(getattr(cfg, name), wired[name]), prefix=f"{name}.")
        for name in STAGE_ORDER
    }


def _selected(cfg: Config) -> list[str]:
    return [s for s in STAGE_ORDER if s in cfg.stages]


def is_complete(cfg: Config) -> bool:
    """Every selected stage says its output is complete."""
    configs = stage_configs(cfg)
    return all(MODULES[name].is_complete(configs[name]) for name in _selected(cfg))


def _wait_for(name: str, cfg, poll: float = 2.0) -> None:
    """Non-main processes of a multi-process launch wait while rank 0 runs a data stage."""
    while not MODULES[name].is_complete(cfg):
        time.sleep(poll)


def run(cfg: Config) -> int:
    configs = stage_configs(cfg)
    rank = console.rank()
    if rank == 0:
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    for name in _selected(cfg):
        if MODULES[name].is_complete(configs[name]):
            console.info(f"[run] {name}: complete in {configs[name].output_dir}, skipped")
            continue
        console.info(f"[run] {name} -> {configs[name].output_dir}")
        if name in ("tokenizer", "shard") and rank != 0:
            _wait_for(name, configs[name])  # data stages run once, on the first process
            continue
        code = MODULES[name].run(configs[name])
        if code:
            console.info(f"[run] {name} exited with {code}; rerun the same command to resume")
            return code
    if rank == 0:
        print_summary(configs)
    return 0


# ----------------------------------------------------------------------------- closing summary


def print_summary(configs: dict[str, Any]) -> None:
    """The closing table of ``pipeline run``: one line per fact a user wants after the whole pipeline."""
    rows = summary_rows(configs)
    width = max(len(k) for k, _ in rows)
    console.info("\n".join(["", "pipeline run summary", "-" * 60] + [f"{k:<{width}}  {v}" for k, v in rows]))


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
    manifest = Path(configs["shard"].output_dir) / MANIFEST_NAME
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
    results = Path(configs["finetune"].output_dir) / RESULTS_FILE
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
