"""Which pretraining settings win: the quickstart recipe and one change at a time, each trained for
the same number of steps on the same shards and scored by the independent probe (:mod:`bench.probe`).

    python -m bench.recipe                          # ~30 min on 2 cores: 14 rows, ~2 min each
    python -m bench.recipe --steps 20 --rows 32 --only quickstart,mask_15 --name recipe_smoke

1. Every row is the ``pretrain`` section of ``configs/quickstart.yaml`` with the row's keys changed,
   run through the real stage and loop (``bench.time_to_loss.run_ours``) for ``--steps`` steps.
2. Each row's model is exported halfway and at the end (outside its clock) and probed: held-out
   WikiText-2, Hugging Face's collator masks at 15%, seed 0 - the same masks for every row.
3. The table: probe loss, accuracy and context gain at both points, and the training seconds (one
   process; a row's seconds compare with the others' only on a quiet machine - see ``load``).
"""

from __future__ import annotations

import argparse
import os

from bench.common import CACHE_DIR, machine_info, print_table, quiet_environment, write_results

quiet_environment()

from bench import workspace  # noqa: E402
from bench.time_to_loss import run_ours, score  # noqa: E402

# name -> (what it tests, the keys changed from the quickstart's pretrain section[, step factor]).
# A step factor < 1 gives a costlier shape fewer steps, so that every row gets about the same
# training seconds as the quickstart row (roughly its inverse time per step; the seconds column
# of the table shows how close it came).
ROWS = {
    "quickstart": ("the quickstart recipe (ModernBERT micro, mask 30%, lr 3e-3, WSD 20%)", {}),
    "linear": ("linear decay after warmup (the quickstart's until round 2)", {"train.schedule": "linear"}),
    "mask_15": ("BERT's 15% masking", {"mlm.probability": 0.15}),
    "lr_1e-3": ("lr 1e-3", {"train.lr": 1.0e-3}),
    "lr_6e-3": ("lr 6e-3", {"train.lr": 6.0e-3}),
    "wsd": (
        "warmup-stable-decay, last 10% decays",
        {"train.schedule": "wsd", "train.decay_ratio": 0.1},
    ),
    "wsd_30": (
        "warmup-stable-decay, last 30% decays",
        {"train.schedule": "wsd", "train.decay_ratio": 0.3},
    ),
    "betas_95": ("Adam betas (0.9, 0.95)", {"train.betas": [0.9, 0.95]}),
    "eps_1e-8": ("Adam eps 1e-8", {"train.eps": 1.0e-8}),
    "wd_0.1": ("weight decay 0.1", {"train.weight_decay": 0.1}),
    "deep_128x4": (
        "deeper: 128 x 4 layers, at the quickstart's seconds",
        {"model.num_layers": 4, "train.warmup_steps": 108},  # warmup 30%, as 180 of 600
        0.6,
    ),
    "mini_256x4": (
        "ModernBERT at BERT-mini's size (256 x 4, GLU 512), at the quickstart's seconds",
        {"model.preset": "mini", "train.warmup_steps": 60},
        0.33,
    ),
    "bert_micro": (
        "BERT blocks (post-norm, GELU, learned positions) at the same size",
        {"model.arch": "bert"},
    ),
    "old_quickstart": (
        "the previous quickstart: BERT mini (256x4), mask 15%, lr 1e-3",
        {"model.arch": "bert", "model.preset": "mini", "mlm.probability": 0.15, "train.lr": 1.0e-3},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per row")
    parser.add_argument("--rows", type=int, default=512, help="probe blocks of 128 tokens (0 = all)")
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--name", default="recipe")
    args = parser.parse_args()
    machine, shards, results = machine_info(), workspace.shards(args.vocab), []
    for name in args.only.split(","):
        description, overrides, *factor = ROWS[name]
        steps = round(args.steps * (factor[0] if factor else 1.0))
        out = CACHE_DIR / f"{args.name}-runs" / name
        snaps = run_ours(shards, out, 2, steps, overrides)
        half, end = score(snaps[1:], args.rows)  # snapshot 0 is the untrained model
        results.append(
            {
                "row": name,
                "description": description,
                "changed": overrides,
                "steps": steps,
                "seconds": end["seconds"],
                "load": os.getloadavg()[0],
                **{f"half_{k}": half[k] for k in ("probe_loss", "probe_accuracy", "context_gain")},
                **{k: end[k] for k in ("probe_loss", "probe_accuracy", "context_gain")},
            }
        )
        print(f"{name}: probe loss {end['probe_loss']:.3f}, gain {end['context_gain']:.2f}", flush=True)
    columns = [
        ("row", "row", ""),
        ("steps", "steps", "d"),
        ("seconds", "train s", ".0f"),
        ("half_probe_loss", "probe loss @half", ".3f"),
        ("probe_loss", "probe loss @end", ".3f"),
        ("probe_accuracy", "probe acc", ".3f"),
        ("context_gain", "context gain", ".2f"),
    ]
    table = print_table(f"Pretraining recipe, {args.steps} steps x 32 x 128 tokens", results, columns)
    write_results(
        args.name,
        {"steps": args.steps, "probe_rows": args.rows, "rows": results, "table": table},
        machine,
    )


if __name__ == "__main__":
    main()
