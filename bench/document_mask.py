"""Document-boundary masking (``mlm.document_mask``): its effect on MLM loss, same steps and seed.

Run from the repository root (the venv active):

    python -m bench.document_mask                        # 2 x 300 steps, hidden 128 x 2 layers (~10 min)
    python -m bench.document_mask --arch modernbert --hidden 256 --layers 4 --steps 400

Trains the same small model twice with ``pipeline pretrain`` on the WikiText-2 shards (one document
per line, so a 128-token row holds several documents): once attending across the whole packed row,
once only within each document.  Same seed, data order, masks and steps; both evaluate on the whole
validation split with their own attention.  Reports the validation MLM loss / accuracy along the way
and the wall time of each run (a rough speed figure: the paired speed ratio is the ``doc_mask`` row
of ``bench.pretrain_throughput``).  Writes ``bench/results/document_mask.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, print_table, quiet_environment, write_results

quiet_environment()

from bench import workspace  # noqa: E402
from bench.ours import mixed_precision  # noqa: E402
from pipeline.cli import main as pipeline_main  # noqa: E402


def train(args, shards: Path, out: Path, document_mask: bool) -> dict:
    overrides = [
        f"data.shards={shards}",
        f"output_dir={out}",
        f"model.arch={args.arch}",
        "model.preset=custom",
        f"model.hidden_size={args.hidden}",
        f"model.num_layers={args.layers}",
        f"model.num_heads={args.hidden // 64}",
        f"model.intermediate_size={args.hidden * (2 if args.arch == 'modernbert' else 4)}",
        f"mlm.probability={args.mlm_probability}",
        f"mlm.document_mask={str(document_mask).lower()}",
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.warmup_steps={args.steps // 10}",
        f"train.eval_every={args.eval_every}",
        "train.save_every=0",
        "train.log_every=10",
        f"train.seed={args.seed}",
        "train.progress=false",
        "train.resume=never",
    ]
    start = time.perf_counter()
    with mixed_precision(None):  # train.precision=auto, as a user runs it
        if pipeline_main(["pretrain", *overrides]) != 0:
            raise SystemExit(f"pretraining failed: {out}")
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/loss" in r]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "document_mask": document_mask,
        "eval": [{k: r[k] for k in ("step", "eval/loss", "eval/accuracy")} for r in evals],
        "final_eval_loss": evals[-1]["eval/loss"],
        "final_eval_accuracy": evals[-1]["eval/accuracy"],
        "final_train_loss": [r["train/loss"] for r in records if "train/loss" in r][-1],
        "wall_s": seconds,
        "tokens_per_s": summary["tokens_per_sec"],
        "precision": summary["precision"]["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["bert", "modernbert"], default="bert")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    machine = machine_info()
    shards = workspace.shards(8000, 128)
    with tempfile.TemporaryDirectory(prefix="bench-docmask-") as tmp:
        runs = [train(args, shards, Path(tmp) / f"mask{int(flag)}", flag) for flag in (False, True)]
    rows = [
        {
            "run": "document mask" if r["document_mask"] else "whole row",
            **{k: r[k] for k in ("final_eval_loss", "final_eval_accuracy", "final_train_loss", "wall_s")},
            "curve": ", ".join(f"{e['step']}: {e['eval/loss']:.3f}" for e in r["eval"]),
        }
        for r in runs
    ]
    table = print_table(
        f"mlm.document_mask, {args.arch} {args.hidden}x{args.layers}, {args.steps} steps x {args.batch_size} x 128, "
        f"seed {args.seed}, {runs[0]['precision']}",
        rows,
        [
            ("run", "attention", ""),
            ("final_eval_loss", "val MLM loss", ".4f"),
            ("final_eval_accuracy", "val accuracy", ".4f"),
            ("final_train_loss", "last train loss", ".4f"),
            ("wall_s", "wall s", ".0f"),
            ("curve", "val loss by step", ""),
        ],
    )
    write_results(
        "document_mask",
        {"settings": vars(args), "corpus": workspace.corpus()[1], "runs": runs, "table": table},
        machine,
    )


if __name__ == "__main__":
    main()
