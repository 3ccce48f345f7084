"""Packed vs padded fine-tuning batches: the same SST-2 accuracy? (``data.packing``, seed by seed).

Run from the repository root (the venv active):

    python -m bench.finetune_accuracy                       # seeds 0 and 1, ~4 x 3 min on 2 cores
    python -m bench.finetune_accuracy --seeds 0,1,2 --steps 300

Fine-tunes ``configs/finetune/sst2_scratch.yaml`` (BERT-mini from random weights, 300 steps x 32,
random batches, dropout 0.1) on the full SST-2 train split with the benchmarks' 8k WordPiece
tokenizer, once with packed training batches (the default) and once padded, for each seed.  The
batches hold the same examples (packing only lays them out) and one step's loss and gradients agree
to float rounding (tests/finetune/test_packing.py); dropout draws its masks per tensor shape, so the
two runs diverge like two seeds would.  Reports dev accuracy (the best of the evaluations, which
is what ``final/`` holds) and wall time.  Writes ``bench/results/finetune_packing_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import DATA_DIR, REPO, machine_info, print_table, quiet_environment, write_results

quiet_environment()

from bench import workspace  # noqa: E402
from bench.ours import mixed_precision  # noqa: E402
from pipeline.cli import main as pipeline_main  # noqa: E402


def finetune(args, out: Path, seed: int, packing: bool) -> dict:
    overrides = [
        f"data.train={DATA_DIR / 'sst2' / 'train.tsv'}",
        f"data.validation={DATA_DIR / 'sst2' / 'dev.tsv'}",
        f"model.tokenizer={workspace.tokenizer(8000)}",
        f"output_dir={out}",
        f"data.packing={str(packing).lower()}",
        f"train.seed={seed}",
        f"train.max_steps={args.steps}",
        f"train.eval_every={args.steps // 3}",
        "train.save_every=0",
        "train.progress=false",
        "train.resume=never",
    ]
    start = time.perf_counter()
    with mixed_precision(None):  # train.precision=auto, as a user runs it
        code = pipeline_main(
            ["finetune", "--config", str(REPO / "configs/finetune/sst2_scratch.yaml"), *overrides]
        )
    if code != 0:
        raise SystemExit(f"fine-tuning failed: {out}")
    results = json.loads((out / "eval_results.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    return {
        "seed": seed,
        "packing": packing,
        "dev_accuracy": results["eval/accuracy"],
        "dev_f1": results["eval/f1"],
        "dev_loss": results["eval/loss"],
        "best_step": results["step"],
        "wall_s": time.perf_counter() - start,
        "precision": summary["precision"]["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    machine = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-ft-acc-") as tmp:
        for seed in map(int, args.seeds.split(",")):
            for packing in (True, False):
                runs.append(finetune(args, Path(tmp) / f"s{seed}-p{int(packing)}", seed, packing))
                print(json.dumps(runs[-1]), flush=True)
    table = print_table(
        f"SST-2 from scratch (configs/finetune/sst2_scratch.yaml, {args.steps} steps), packed vs padded batches, "
        f"{runs[0]['precision']}",
        runs,
        [
            ("seed", "seed", ""),
            ("packing", "data.packing", ""),
            ("dev_accuracy", "dev accuracy", ".3f"),
            ("dev_f1", "dev F1", ".3f"),
            ("dev_loss", "dev loss", ".3f"),
            ("wall_s", "wall s", ".0f"),
        ],
    )
    write_results(
        "finetune_packing_accuracy", {"settings": vars(args), "runs": runs, "table": table}, machine
    )


if __name__ == "__main__":
    main()
