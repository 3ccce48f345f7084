"""Fine-tuning throughput on SST-2: ``pipeline finetune`` vs the HF run_glue_no_trainer recipe.

Run from the repository root (the venv active):

    python -m bench.finetune_throughput                   # BERT mini, batch 32 (~6 min on 2 cores)
    python -m bench.finetune_throughput --size base --steps 4
    python -m bench.finetune_throughput --configs hf,ours,ours_fp32,hf_fp32,hf_bf16

Both sides fine-tune the same architecture (BERT with the size preset's dimensions, randomly
initialised - throughput does not depend on the weights) on the first ``--examples`` SST-2 training
sentences, tokenized with the same 8k WordPiece tokenizer (max length 128), batch 32, dynamic
padding to the longest sentence of each batch:

* hf: ``bench.hf_recipes.HFClassifierTrainer`` (DataCollatorWithPadding, AutoModelForSequenceClassification,
  torch AdamW, the example's Accelerate loop) at ITS best precision here: fp32 and bf16-autocast steps
  alternate first and the faster becomes the baseline (``hf_fp32`` / ``hf_bf16`` are references);
* ours: the real ``pipeline finetune`` stage (its build_task and runner, ``model.init_from=none``) in the
  real ``fit`` loop, step-timed by ``bench.ours.instrumented_fit``, drawing random batches as the
  HF recipe does, in the precision ``train.precision=auto`` picks: ``ours_padded`` pads each batch
  like the recipe (``data.packing=false``), ``ours`` packs it (the default), ``ours_fp32`` is the
  default in fp32, ``ours_grouped`` adds length-grouped batches (``data.group_by_length``).

Examples/s = sequences per step x steady-state steps / their total time (a mean, because dynamic
padding makes each step's cost depend on its longest sentence).  Each of our rows alternates step
by step with the HF recipe (one HF step at each of our step boundaries, timed separately), and
"x HF" compares those pairs, so load from other processes hits both sides alike.
Writes ``bench/results/finetune_throughput.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import DATA_DIR, machine_info, median, print_table, quiet_environment, ratio, write_results

quiet_environment()

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig  # noqa: E402

from bench import workspace  # noqa: E402
from bench.hf_recipes import HFClassifierTrainer, glue_dataset  # noqa: E402
from bench.ours import Interleave, StepTimes, instrumented_fit, mixed_precision  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.mlm.models import PRESETS  # noqa: E402

MAX_LENGTH, VOCAB = 128, 8000
ROWS = {  # name -> (description, overrides of our finetune config; None for an HF row)
    "hf": ("HF run_glue_no_trainer recipe at its best precision here (the baseline)", None),
    "hf_fp32": ("HF recipe in fp32 (reference)", None),
    "hf_bf16": ("HF recipe under accelerate --mixed_precision bf16 (reference)", None),
    "ours_padded": (
        "pipeline finetune, random batches padded like the recipe (data.packing=false); precision auto",
        ["data.packing=false"],
    ),
    "ours": ("+ packed batches, no padding (data.packing=true, the default)", []),
    "ours_fp32": ("the default with train.precision=fp32 (reference)", ["train.precision=fp32"]),
    "ours_grouped": ("+ length-grouped batches (data.group_by_length=true)", ["data.group_by_length=true"]),
}
HF_PRECISION = {"hf_fp32": "no", "hf_bf16": "bf16"}


def write_subset(source: Path, target: Path, limit: int) -> Path:
    with (
        open(source, newline="", encoding="utf-8") as f,
        open(target, "w", newline="", encoding="utf-8") as out,
    ):
        for index, line in enumerate(f):
            if index > limit:  # the header plus ``limit`` rows
                break
            out.write(line)
    return target


def hf_steps(args, train_tsv: Path, precision: str):
    """The HF recipe as a generator of optimizer steps (built once per precision, reused)."""
    tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(VOCAB))
    dataset = glue_dataset(tokenizer, train_tsv, "sentence", "label", MAX_LENGTH)
    dims = PRESETS[args.size]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden_size"],
        num_hidden_layers=dims["num_layers"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=dims["intermediate_size"],
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    return HFClassifierTrainer(
        config, tokenizer, dataset, batch_size=args.batch_size, mixed_precision=precision
    ).steps()


def run_ours(
    args, train_tsv: Path, dev_tsv: Path, total_steps: int, overrides=(), on_tick=None
) -> list[float]:
    from pipeline.stages import finetune
    from pipeline.train import run_training_stage

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as out, mixed_precision(None):
        cfg = load_config(
            finetune.Config,
            None,
            [
                "task.type=classification",
                f"data.train={train_tsv}",
                f"data.validation={dev_tsv}",
                "data.text_columns=[sentence]",
                "data.label_column=label",
                f"data.max_length={MAX_LENGTH}",
                "model.init_from=none",
                f"model.tokenizer={workspace.tokenizer(VOCAB)}",
                f"model.preset={args.size}",
                f"output_dir={out}",
                f"train.max_steps={total_steps + 1}",
                f"train.batch_size={args.batch_size}",
                "train.lr=2e-5",
                "train.eval_every=0",
                "train.save_every=0",
                f"train.log_every={total_steps + 1}",
                "train.peak_tflops=1",
                "train.progress=false",
                "train.resume=never",
                *overrides,
            ],
        )
        times = StepTimes(on_tick=on_tick)
        # the stage's own run (finetune.run) with the loop's timing hooks
        hooks = instrumented_fit(times, grad_accum=1)
        run_training_stage(cfg, finetune.build_task, hooks=hooks, matmul_dims=cfg.model.matmul_dims())
    return times.durations


def _examples_per_s(args, durations: list[float]) -> float:
    steady = durations[args.warmup :]
    return args.batch_size * len(steady) / sum(steady)


def best_hf_precision(args, trainers: dict) -> str:
    """The HF recipe's faster precision here: fp32 and bf16 steps alternate (after one warm-up each)."""
    sides = {mode: Interleave(trainers[mode]) for mode in ("no", "bf16")}
    for _ in range(args.calibration_steps + 1):
        for partner in sides.values():
            partner()
    speedup = median(f / b for f, b in zip(sides["no"].durations[1:], sides["bf16"].durations[1:]))
    print(f"HF recipe: bf16 autocast runs at {speedup:.2f}x fp32 here", flush=True)
    return "bf16" if speedup > 1 else "no"


def measure_round(
    args, configs, trainers, baseline: str, train_tsv: Path, dev_tsv: Path, interleave: bool
) -> dict:
    """Every row once; with ``hf`` among the rows, each of ours alternates step by step with it."""
    total, measured, hf_durations = args.warmup + args.steps, {}, []
    for name in configs:
        if ROWS[name][1] is None:
            if not (name == "hf" and interleave):
                partner = Interleave(trainers[HF_PRECISION.get(name, baseline)])
                for _ in range(total):
                    partner()
                measured[name] = {
                    "examples_per_s": _examples_per_s(args, partner.durations),
                    "all_step_s": partner.durations,
                }
            continue
        partner = Interleave(trainers[baseline]) if interleave else None
        durations = run_ours(args, train_tsv, dev_tsv, total, ROWS[name][1], on_tick=partner)
        measured[name] = {"examples_per_s": _examples_per_s(args, durations), "all_step_s": durations}
        if partner is not None:
            measured[name]["paired_hf"] = _examples_per_s(args, partner.durations)
            hf_durations += partner.durations[args.warmup :]
    if interleave:
        measured["hf"] = {
            "examples_per_s": args.batch_size * len(hf_durations) / sum(hf_durations),
            "all_step_s": hf_durations,
        }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(PRESETS), default="mini")
    parser.add_argument("--configs", default="hf,ours_padded,ours,ours_fp32,ours_grouped")
    parser.add_argument("--calibration-steps", type=int, default=4, help="HF fp32/bf16 step pairs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=4096, help="SST-2 training sentences used")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    configs = args.configs.split(",")
    if set(configs) - set(ROWS):
        parser.error(f"unknown configs {sorted(set(configs) - set(ROWS))}; choose from {list(ROWS)}")
    machine = machine_info()
    interleave = "hf" in configs and any(ROWS[name][1] is not None for name in configs)
    rounds, trainers, baseline = [], {}, None
    with tempfile.TemporaryDirectory(prefix="bench-sst2-") as tmp:
        train_tsv = write_subset(DATA_DIR / "sst2" / "train.tsv", Path(tmp) / "train.tsv", args.examples)
        dev_tsv = write_subset(DATA_DIR / "sst2" / "dev.tsv", Path(tmp) / "dev.tsv", 64)
        if any(ROWS[name][1] is None for name in configs):
            trainers = {mode: hf_steps(args, train_tsv, mode) for mode in ("no", "bf16")}
            baseline = best_hf_precision(args, trainers)
        for index in range(args.rounds):
            rounds.append(measure_round(args, configs, trainers, baseline, train_tsv, dev_tsv, interleave))
            print(
                f"round {index + 1}/{args.rounds}: "
                + ", ".join(f"{name} {m['examples_per_s']:.1f} examples/s" for name, m in rounds[-1].items()),
                flush=True,
            )
    rows = [
        {
            "config": name,
            "description": ROWS[name][0],
            "examples_per_s": median(r[name]["examples_per_s"] for r in rounds),
            "vs_hf": median(
                ratio(r[name]["examples_per_s"], r[name].get("paired_hf", r["hf"]["examples_per_s"]))
                for r in rounds
            )
            if "hf" in configs
            else None,
        }
        for name in configs
    ]
    table = print_table(
        f"SST-2 fine-tuning throughput, BERT {args.size}, batch {args.batch_size}, random batches, {machine['cpu']}; "
        f"HF baseline in {'fp32' if baseline == 'no' else baseline}",
        rows,
        [
            ("config", "row", ""),
            ("description", "what", ""),
            ("examples_per_s", "examples/s", ".1f"),
            ("vs_hf", "x HF", ".2f"),
        ],
    )
    write_results(
        "finetune_throughput",
        {
            "settings": vars(args),
            "hf_baseline": baseline,
            "rows": rows,
            "rounds": rounds,
            "table": table,
            "cuda": torch.cuda.is_available(),
        },
        machine,
    )


if __name__ == "__main__":
    main()
