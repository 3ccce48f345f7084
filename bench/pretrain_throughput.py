"""Pretraining throughput: our MLM step vs the Hugging Face run_mlm_no_trainer recipe, side by side.

Run from the repository root (the venv active):

    python -m bench.pretrain_throughput --size mini          # ~7 min on 2 cores: ablation without compile
    python -m bench.pretrain_throughput --size mini --configs hf,nodrop,compile,bf16 --rounds 1 \
        --name pretrain_mini_cpu_compile                     # + torch.compile (cold compile ~1-3 min per row)
    python -m bench.pretrain_throughput --size base          # BERT-base dims: HF recipe vs ours (fp32)
    python -m bench.pretrain_throughput --size base --configs hf,fused,nodrop,compile,bf16 --rounds 2   # longer
    python -m bench.pretrain_throughput --size base --device cuda --batch-size 128 ...            # see bench/gpu.sh
    python -m bench.pretrain_throughput --size mini --profile  # + torch.profiler table of our best step

Both sides train the same model dimensions (BERT; ``mini`` = hidden 256 x 4 layers, vocab 8000;
``base`` = 768 x 12, vocab 30522) on the same WikiText-2 text, at the same sequence length (128)
and tokens per optimizer step.  The baseline is ``bench.hf_recipes.HFMlmTrainer`` (the example's
data pipeline, model, optimizer and loop, fp32).  Ours is the real ``pipeline pretrain`` task
(shards written by ``pipeline shard``, Masker, SparseMLM) trained by the real ``fit`` loop; the
ablation adds one optimisation per row.  Configurations run one after another within a round and
rounds repeat, so every row sees the same machine load; each row reports the median over rounds of
its steady-state steps (the first ``--warmup`` steps, which include compilation, are reported
separately).  MFU = tokens/s x model FLOPs per token / measured matmul peak (pipeline.train.throughput's
probe, re-run every round; the best value ever measured on the machine is used, see
``bench.common.best_known_peaks``);
FLOPs per token count the MLM head where each variant computes it (every position for the dense
head, the masked positions for the sparse head).  Writes ``bench/results/pretrain_<size>_<device>.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.common import (
    best_known_peaks,
    machine_info,
    measure_peaks,
    median,
    print_table,
    quiet_environment,
    ratio,
    steady_state,
    write_results,
)

quiet_environment()

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig  # noqa: E402

from bench import workspace  # noqa: E402
from bench.hf_recipes import HFMlmTrainer, mlm_dataset  # noqa: E402
from bench.ours import Interleave, Variant, profile_pretrain, run_pretrain  # noqa: E402
from pipeline.mlm.models import PRESETS, mlm_flops_per_token  # noqa: E402

SEQ_LEN = 128


@dataclass(frozen=True)
class HFRecipe:
    """Settings of a baseline row: the HF recipe as written, or with one knob changed."""

    precision: str = "no"  # accelerate mixed precision
    dropout: float = 0.1  # BertConfig's default, as in the example


SIZES = {  # defaults per size: tokens per step = batch x 128; keep the default run near 5 minutes on 2 cores
    "tiny": {
        "preset": "tiny",
        "vocab": 8000,
        "batch": 8,
        "warmup": 1,
        "steps": 2,
        "rounds": 1,
        "configs": "hf,fused",
    },
    "mini": {
        "preset": "mini",
        "vocab": 8000,
        "batch": 32,
        "warmup": 1,
        "steps": 3,
        "rounds": 2,
        "configs": "hf,loop,sparse,fused,nodrop,hf_nodrop,bf16_eager",
    },  # + compile,bf16: ~3 min more compile time on 2 cores
    "base": {
        "preset": "base",
        "vocab": 30522,
        "batch": 8,
        "warmup": 1,
        "steps": 4,
        "rounds": 1,
        "configs": "hf,fused,nodrop",
    },
}
ROWS = {  # name -> (description, our Variant or None for the HF recipe, HF recipe settings)
    "hf": ("HF run_mlm_no_trainer recipe: fp32, dense head, torch AdamW", None, HFRecipe()),
    "hf_bf16": ("HF recipe with accelerate --mixed_precision bf16 (reference)", None, HFRecipe("bf16")),
    "hf_nodrop": (
        "HF recipe with dropout 0 (reference: the recipe change alone)",
        None,
        HFRecipe(dropout=0.0),
    ),
    "loop": (
        "ours: shards + Masker + fit loop, HF dense loss, torch AdamW",
        Variant(sparse_head=False, fused_adamw=False),
        None,
    ),
    "sparse": ("+ sparse MLM head (masked positions only)", Variant(fused_adamw=False), None),
    "fused": ("+ fused AdamW (pipeline default)", Variant(), None),
    "nodrop": (
        "+ dropout 0 (ModernBERT/NeoBERT/Cramming pretraining; lets SDPA use its fused CPU kernel)",
        Variant(dropout=0.0),
        None,
    ),
    "compile": ("+ torch.compile (train.compile=true)", Variant(dropout=0.0, compile=True), None),
    "bf16": (
        "+ bf16 autocast (accelerate --mixed_precision bf16)",
        Variant(dropout=0.0, compile=True, precision="bf16"),
        None,
    ),
    "compile_drop": ("fused + torch.compile, dropout 0.1", Variant(compile=True), None),
    "bf16_eager": ("fused + bf16 autocast, no compile", Variant(precision="bf16"), None),
    "bf16_nodrop": ("+ dropout 0, bf16, no compile", Variant(dropout=0.0, precision="bf16"), None),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="mini")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--configs", help=f"comma-separated rows from {list(ROWS)} (default: per size)")
    parser.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: per size)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--warmup", type=int, help="steps excluded from the steady state (default: per size)")
    parser.add_argument("--steps", type=int, help="measured steady-state steps per row and round")
    parser.add_argument("--rounds", type=int, help="repeat every row this many times, interleaved")
    parser.add_argument("--profile", action="store_true", help="profile 2 steady steps of our best row")
    parser.add_argument("--name", help="results file name (default pretrain_<size>_<device>)")
    args = parser.parse_args()
    for key, default in SIZES[args.size].items():
        attr = "batch_size" if key == "batch" else key
        if getattr(args, attr, None) is None:
            setattr(args, attr, default)
    args.configs = args.configs.split(",")
    unknown = set(args.configs) - set(ROWS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {list(ROWS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    return args


class HFSide:
    """The baseline's tokenizer, grouped dataset and model config (built once, reused every round)."""

    def __init__(self, args):
        self.tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(args.vocab))
        text, _ = workspace.corpus()
        self.dataset = mlm_dataset(
            self.tokenizer, text, SEQ_LEN, cache_dir=str(workspace.CACHE_DIR / "hf-datasets")
        )
        dims = PRESETS[args.preset]
        self.config = BertConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=dims["hidden_size"],
            num_hidden_layers=dims["num_layers"],
            num_attention_heads=dims["num_heads"],
            intermediate_size=dims["intermediate_size"],
            max_position_embeddings=512,
            pad_token_id=self.tokenizer.pad_token_id,
        )

        self.tokens_per_step = args.batch_size * args.grad_accum * SEQ_LEN
        self.flops_per_token = mlm_flops_per_token(
            self.config, SEQ_LEN, SEQ_LEN
        )  # dense head: every position
        self._steps: dict[HFRecipe, object] = {}

    def steps(self, args, recipe: HFRecipe):
        """One trainer per recipe, kept across rows and rounds (its first step is its warm-up)."""
        if recipe not in self._steps:
            config = BertConfig(
                **{
                    **self.config.to_dict(),
                    "hidden_dropout_prob": recipe.dropout,
                    "attention_probs_dropout_prob": recipe.dropout,
                }
            )
            trainer = HFMlmTrainer(
                config,
                self.tokenizer,
                self.dataset,
                batch_size=args.batch_size,
                grad_accum=args.grad_accum,
                mixed_precision=recipe.precision,
            )
            self._steps[recipe] = trainer.steps()
        return self._steps[recipe]

    def standalone(self, args, recipe: HFRecipe, total_steps: int) -> list[float]:
        partner = Interleave(self.steps(args, recipe), sync=_sync(args))
        for _ in range(total_steps):
            partner()
        return partner.durations


def _sync(args):
    return torch.cuda.synchronize if args.device == "cuda" else None


def step_stats(
    durations: list[float], waits: list[float], tokens_per_step: int, flops_per_token: float, warmup: int
) -> dict:
    stats = steady_state(durations, warmup)
    return {
        "step_s": stats["median_s"],
        "first_step_s": durations[0],
        "tokens_per_s": tokens_per_step / stats["median_s"],
        "flops_per_token": flops_per_token,
        "all_step_s": durations,
        "data_wait_fraction": sum(waits[warmup:]) / sum(durations[warmup:]) if waits else None,
    }


def measure_round(args, hf: HFSide | None, shards) -> dict[str, dict]:
    """Every row once.  With ``hf`` among the rows, each of our rows alternates step by step with
    the HF recipe (one HF step at every step boundary of ours), and "x HF" compares those pairs."""
    total = args.warmup + args.steps
    ours_rows = [name for name in args.configs if ROWS[name][1] is not None]
    interleave = "hf" in args.configs and bool(ours_rows)
    measured, hf_steady, hf_first = {}, [], None
    for name in args.configs:
        _, variant, recipe = ROWS[name]
        if variant is None:
            if not (name == "hf" and interleave):
                measured[name] = step_stats(
                    hf.standalone(args, recipe, total),
                    [],
                    hf.tokens_per_step,
                    hf.flops_per_token,
                    args.warmup,
                )
            continue
        # on a GPU a bf16 row is compared with the recipe in bf16 too (on CPUs, the fp32 recipe)
        paired_recipe = (
            HFRecipe("bf16") if args.device == "cuda" and variant.precision == "bf16" else HFRecipe()
        )
        partner = Interleave(hf.steps(args, paired_recipe), sync=_sync(args)) if interleave else None
        run = run_pretrain(
            variant,
            shards,
            args.preset,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            steps=total + 1,
            on_tick=partner,
        )
        measured[name] = step_stats(
            run["durations"], run["waits"], run["tokens_per_step"], run["flops_per_token"], args.warmup
        )
        if partner is not None:
            paired = step_stats(partner.durations, [], hf.tokens_per_step, hf.flops_per_token, args.warmup)
            measured[name]["paired_hf_tokens_per_s"] = paired["tokens_per_s"]
            measured[name]["paired_with"] = "hf_bf16" if paired_recipe.precision == "bf16" else "hf"
            if paired_recipe == HFRecipe():  # the "hf" row: the fp32 recipe's steps only
                hf_steady += partner.durations[args.warmup :]
                hf_first = hf_first or partner.durations[0]
        print(
            f"  {name:10s} {measured[name]['tokens_per_s']:10,.0f} tokens/s  (steps: "
            f"{', '.join(f'{d:.2f}' for d in run['durations'])} s)"
            + (
                f"  | HF alongside: {measured[name]['paired_hf_tokens_per_s']:,.0f} tokens/s"
                if partner
                else ""
            ),
            flush=True,
        )
    if interleave and hf_steady:
        measured["hf"] = step_stats([hf_first, *hf_steady], [], hf.tokens_per_step, hf.flops_per_token, 1)
    elif interleave:  # every row of ours was paired with the bf16 recipe: time the fp32 one alone
        durations = hf.standalone(args, HFRecipe(), args.warmup + args.steps)
        measured["hf"] = step_stats(durations, [], hf.tokens_per_step, hf.flops_per_token, args.warmup)
    return measured


def _vs_hf(name: str, rounds: list[dict]) -> float | None:
    if "hf" not in rounds[0]:
        return None
    paired = [r[name].get("paired_hf_tokens_per_s") or r["hf"]["tokens_per_s"] for r in rounds]
    return median(ratio(r[name]["tokens_per_s"], hf) for r, hf in zip(rounds, paired))


def summarise(args, rounds: list[dict], peaks: dict) -> list[dict]:
    rows, previous = [], None
    best_peak = max(peaks.values())
    for name in args.configs:
        description, variant, recipe = ROWS[name]
        runs = [r[name] for r in rounds]
        tps = median(r["tokens_per_s"] for r in runs)
        dtype_peak = peaks[
            "bf16" if (recipe.precision if variant is None else variant.precision) == "bf16" else "fp32"
        ]
        vs_hf = _vs_hf(name, rounds)
        rows.append(
            {
                "config": name,
                "description": description,
                "step_s": median(r["step_s"] for r in runs),
                "tokens_per_s": tps,
                "vs_hf": vs_hf,
                "paired_with": runs[0].get("paired_with"),  # the HF recipe row "x HF" divides by
                "vs_previous": ratio(vs_hf, previous) if previous and vs_hf else None,
                "mfu_dtype_peak": tps * runs[0]["flops_per_token"] / dtype_peak,
                "mfu_best_peak": tps * runs[0]["flops_per_token"] / best_peak,
                "first_step_s": runs[0]["first_step_s"],
                "warmup_extra_s": max(
                    0.0, runs[0]["first_step_s"] - runs[0]["step_s"]
                ),  # compile, allocation
                "data_wait_fraction": median(r["data_wait_fraction"] for r in runs) if variant else None,
                "rounds": runs,
            }
        )
        previous = vs_hf
    return rows


COLUMNS = [
    ("config", "row", ""),
    ("description", "what changes", ""),
    ("step_s", "step s", ".2f"),
    ("tokens_per_s", "tokens/s", ",.0f"),
    ("vs_hf", "x HF", ".2f"),
    ("paired_with", "HF row paired", ""),
    ("vs_previous", "x prev row", ".2f"),
    ("mfu_dtype_peak", "MFU (own dtype peak)", ".1%"),
    ("mfu_best_peak", "MFU (best peak)", ".1%"),
    ("warmup_extra_s", "warm-up/compile s", ".1f"),
]


def main() -> None:
    args = parse_args()
    machine = machine_info(args.device)
    shards = workspace.shards(args.vocab, SEQ_LEN)
    hf = HFSide(args) if any(ROWS[c][1] is None for c in args.configs) else None
    rounds, peaks = [], {"fp32": 0.0, "bf16": 0.0}
    for index in range(args.rounds):
        probe = measure_peaks(args.device)  # every round: the best of them is the peak (shared machine)
        peaks = {k: max(peaks[k], probe[k]) for k in peaks}
        print(
            f"round {index + 1}/{args.rounds}: matmul peak probe fp32 {probe['fp32'] / 1e12:.3f} TFLOP/s, "
            f"bf16 {probe['bf16'] / 1e12:.3f} TFLOP/s",
            flush=True,
        )
        rounds.append(measure_round(args, hf, shards))
    probes = peaks
    peaks = best_known_peaks(args.device, probes)
    rows = summarise(args, rounds, peaks)
    ours = [r for r in rows if ROWS[r["config"]][1] is not None]
    # paired "x HF" ratios are robust to load swings between rows; raw tokens/s are not
    best = max(ours, key=lambda r: r["vs_hf"] or r["tokens_per_s"]) if ours else None
    title = (
        f"Pretraining throughput, BERT {args.size} (seq {SEQ_LEN}, {args.batch_size * args.grad_accum} "
        f"sequences/step), {args.device}, {machine['cpu'] if args.device == 'cpu' else machine.get('gpu')}"
    )
    table = print_table(title, rows, COLUMNS)
    profile = profile_pretrain(ROWS[best["config"]][1], shards, args) if args.profile and best else None
    if best:
        print(
            f"ours (best row '{best['config']}'): {best['tokens_per_s']:,.0f} tokens/s, "
            f"{best['vs_hf'] or float('nan'):.2f}x the HF recipe, MFU {best['mfu_best_peak']:.1%} of the best peak"
        )
    write_results(
        args.name or f"pretrain_{args.size}_{args.device}",
        {
            "settings": {k: v for k, v in vars(args).items() if k != "profile"},
            "corpus": workspace.corpus()[1],
            "seq_len": SEQ_LEN,
            "peak_flops": peaks,
            "peak_flops_this_run": probes,
            "rows": rows,
            "best": best and best["config"],
            "table": table,
            "profile": profile,
        },
        machine,
    )


if __name__ == "__main__":
    main()
