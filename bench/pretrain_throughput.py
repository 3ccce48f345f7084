"""Pretraining throughput: our MLM step vs the Hugging Face run_mlm_no_trainer recipe, side by side.

Run from the repository root (the venv active):

    python -m bench.pretrain_throughput --size mini                 # ~10 min on 2 cores: the ablation
    python -m bench.pretrain_throughput --size mini --configs hf,attn,compile,compile_max,compile_static \\
        --rounds 2 --name pretrain_mini_cpu_compile                 # torch.compile modes (cold compile: minutes)
    python -m bench.pretrain_throughput --size mini --arch modernbert --mlm-probability 0.3 \\
        --configs hf,attn,compile --name pretrain_modernbert_mini_cpu   # the ModernBERT-style small recipe
    python -m bench.pretrain_throughput --size base                 # BERT-base dims: MFU
    python -m bench.pretrain_throughput --size mini --profile       # + torch.profiler table of our best row
    python -m bench.pretrain_throughput --size base --device cuda --batch-size 128 ...   # see bench/gpu.sh

Both sides train the same architecture (``--arch``: BERT, or ModernBERT) at the same dimensions
(``mini`` = hidden 256 x 4 layers, vocab 8000; ``base`` = 768 x 12, vocab 30522) on the same
WikiText-2 text, sequence length 128, tokens per optimizer step and masking rate.  The baseline is
``bench.hf_recipes.HFMlmTrainer`` (the example's data pipeline, model, optimizer and loop) at ITS best
precision on this machine: fp32 and bf16 autocast steps of the recipe alternate first and the faster
one becomes the ``hf`` row (``--hf-precision`` fixes it instead).  Ours is the real ``pipeline
pretrain`` task (shards, Masker, SparseMLM) trained by the real ``fit`` loop; the ablation adds one
change per row, starting from the recipe's own settings (dense loss, torch AdamW, dropout 0.1, SDPA)
in the precision ``train.precision=auto`` picks.  Each of our rows alternates step by step with the
baseline in one process ("x HF" compares those pairs, median over rounds), so load from other
processes hits both sides alike; only steady-state steps count (warm-up and compile time reported
apart).  MFU = tokens/s x model FLOPs per token / the measured matmul peak of the dtype the row
computes in (``bench.common.measure_peaks``, every round; the best value ever measured on the machine
is used, see ``bench.common.best_known_peaks``); FLOPs per token count the MLM head where each
variant computes it.  Writes ``bench/results/pretrain_<arch>_<size>_<device>.json``.
"""

from __future__ import annotations

import argparse

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

from bench import workspace  # noqa: E402
from bench.ours import PretrainSetup, Variant, profile_pretrain, run_pretrain  # noqa: E402
from bench.pretrain_baseline import SEQ_LEN, HFRecipe, HFSide  # noqa: E402

SIZES = {  # defaults per size: tokens per step = batch x 128
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
        "steps": 4,
        "rounds": 2,
        "configs": "hf,loop,sparse,fused,nodrop,attn,attn_fp32,hf_fp32,hf_bf16,hf_nodrop",
    },
    "base": {
        "preset": "base",
        "vocab": 30522,
        "batch": 8,
        "warmup": 1,
        "steps": 4,
        "rounds": 1,
        "configs": "hf,attn",
    },
}
PIPELINE_DEFAULT = {
    "dropout": 0.0,
    "attention": "auto",
}  # with Variant's other defaults = `pipeline pretrain`
ROWS = {  # name -> (description, our Variant or None for an HF row, HF recipe settings or None)
    "hf": ("HF run_mlm_no_trainer recipe at its best precision here (the baseline)", None, None),
    "hf_fp32": ("HF recipe in fp32 (reference)", None, HFRecipe("no")),
    "hf_bf16": ("HF recipe under accelerate --mixed_precision bf16 (reference)", None, HFRecipe("bf16")),
    "hf_nodrop": (
        "HF recipe with dropout 0, its best precision (reference: the recipe change alone)",
        None,
        None,
    ),
    "loop": (
        "ours: shards + Masker + fit loop, HF dense loss, torch AdamW, dropout 0.1, SDPA; train.precision=auto",
        Variant(sparse_head=False, fused_adamw=False),
        None,
    ),
    "sparse": ("+ sparse MLM head (masked positions only)", Variant(fused_adamw=False), None),
    "fused": ("+ fused AdamW", Variant(), None),
    "nodrop": ("+ dropout 0 (ModernBERT/NeoBERT/Cramming pretraining)", Variant(dropout=0.0), None),
    "attn": (
        "+ attention auto: eager matmul+softmax on CPU (= `pipeline pretrain` defaults)",
        Variant(**PIPELINE_DEFAULT),
        None,
    ),
    "attn_fp32": (
        "the defaults with train.precision=fp32 (reference)",
        Variant(**PIPELINE_DEFAULT, precision="fp32"),
        None,
    ),
    "compile": ("+ torch.compile (train.compile=true)", Variant(**PIPELINE_DEFAULT, compile=True), None),
    "compile_max": (
        "+ torch.compile mode=max-autotune-no-cudagraphs",
        Variant(**PIPELINE_DEFAULT, compile_mode="max-autotune-no-cudagraphs"),
        None,
    ),
    "compile_static": (
        "+ torch.compile dynamic=False",
        Variant(**PIPELINE_DEFAULT, compile_dynamic=False),
        None,
    ),
    "sdpa_compile": (
        "torch.compile with SDPA attention (reference: the kernel choice under compile)",
        Variant(dropout=0.0, compile=True),
        None,
    ),
    "doc_mask": (
        "the defaults + mlm.document_mask=true (block-diagonal attention per document)",
        Variant(**PIPELINE_DEFAULT, document_mask=True),
        None,
    ),
}


# what each of our rows changes relative to ("x base" compares their paired x HF ratios)
BASE = {
    "loop": "hf",
    "sparse": "loop",
    "fused": "sparse",
    "nodrop": "fused",
    "attn": "nodrop",
    "attn_fp32": "attn",
    "compile": "attn",
    "compile_max": "attn",
    "compile_static": "attn",
    "sdpa_compile": "compile",
    "doc_mask": "attn",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="mini")
    parser.add_argument("--arch", choices=["bert", "modernbert"], default="bert")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--configs", help=f"comma-separated rows from {list(ROWS)} (default: per size)")
    parser.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: per size)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--mlm-probability", type=float, default=0.15, help="masking rate, both sides")
    parser.add_argument("--hf-precision", choices=["best", "fp32", "bf16"], default="best")
    parser.add_argument("--calibration-steps", type=int, default=3, help="HF fp32/bf16 step pairs")
    parser.add_argument("--warmup", type=int, help="steps excluded from the steady state (default: per size)")
    parser.add_argument("--steps", type=int, help="measured steady-state steps per row and round")
    parser.add_argument("--rounds", type=int, help="repeat every row this many times, interleaved")
    parser.add_argument("--profile", action="store_true", help="profile 2 steady steps of our best row")
    parser.add_argument("--name", help="results file name (default pretrain_<arch>_<size>_<device>)")
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


class Bench:
    """One benchmark run: the shared setup, the baseline, and the rows measured round by round."""

    def __init__(self, args):
        self.args = args
        self.sync = torch.cuda.synchronize if args.device == "cuda" else None
        shards = workspace.shards(args.vocab, SEQ_LEN)
        self.setup = PretrainSetup(
            shards, args.arch, args.preset, args.batch_size, args.grad_accum, args.mlm_probability
        )
        self.hf = HFSide(args) if any(ROWS[c][1] is None for c in args.configs) else None
        self.baseline = None
        if self.hf is not None:
            self.baseline = self.hf.best_precision(args.hf_precision, args.calibration_steps, self.sync)

    def recipe(self, name: str) -> HFRecipe:
        fixed = ROWS[name][2]
        if fixed is not None:
            return fixed
        return HFRecipe(self.baseline.precision, 0.0 if name == "hf_nodrop" else None)

    def _hf_stats(self, durations: list[float], warmup: int) -> dict:
        return step_stats(durations, [], self.hf.tokens_per_step, self.hf.flops_per_token, warmup)

    def measure_round(self) -> dict[str, dict]:
        """Every row once.  With ``hf`` among the rows, each of our rows alternates step by step with
        the baseline (one baseline step at every step boundary of ours)."""
        args, total = self.args, self.args.warmup + self.args.steps
        interleave = "hf" in args.configs and any(ROWS[c][1] is not None for c in args.configs)
        measured, hf_steady, hf_first = {}, [], None
        for name in args.configs:
            _, variant, _ = ROWS[name]
            if variant is None:
                if not (name == "hf" and interleave):
                    durations = self.hf.standalone(self.recipe(name), total, self.sync)
                    measured[name] = {
                        **self._hf_stats(durations, args.warmup),
                        "precision": self.recipe(name).precision,
                    }
                continue
            partner = self.hf.partner(self.baseline, self.sync) if interleave else None
            run = run_pretrain(variant, self.setup, steps=total + 1, on_tick=partner)
            stats = step_stats(
                run["durations"], run["waits"], run["tokens_per_step"], run["flops_per_token"], args.warmup
            )
            measured[name] = {**stats, "precision": run["precision"]}
            line = f"  {name:14s} {stats['tokens_per_s']:10,.0f} tokens/s ({run['precision']})"
            if partner is not None:
                paired = self._hf_stats(partner.durations, args.warmup)
                measured[name]["paired_hf_tokens_per_s"] = paired["tokens_per_s"]
                hf_steady += partner.durations[args.warmup :]
                hf_first = hf_first or partner.durations[0]
                line += f" | HF alongside: {paired['tokens_per_s']:,.0f} tokens/s"
            print(line, flush=True)
        if interleave:
            measured["hf"] = {
                **self._hf_stats([hf_first, *hf_steady], 1),
                "precision": self.baseline.precision,
            }
        return measured


def _vs_hf(name: str, rounds: list[dict]) -> float | None:
    if "hf" not in rounds[0]:
        return None
    paired = [r[name].get("paired_hf_tokens_per_s") or r["hf"]["tokens_per_s"] for r in rounds]
    return median(ratio(r[name]["tokens_per_s"], hf) for r, hf in zip(rounds, paired))


def summarise(args, rounds: list[dict], peaks: dict) -> list[dict]:
    rows = {}
    for name in args.configs:
        description, variant, _ = ROWS[name]
        runs = [r[name] for r in rounds]
        tps = median(r["tokens_per_s"] for r in runs)
        dtype = "bf16" if runs[0]["precision"] == "bf16" else "fp32"
        base = rows.get(BASE.get(name))
        vs_hf = _vs_hf(name, rounds)
        rows[name] = {
            "config": name,
            "description": description,
            "precision": dtype,
            "step_s": median(r["step_s"] for r in runs),
            "tokens_per_s": tps,
            "vs_hf": vs_hf,
            "base": BASE.get(name),
            "vs_base": ratio(vs_hf, base["vs_hf"]) if base and base["vs_hf"] and vs_hf else None,
            "mfu_dtype_peak": tps * runs[0]["flops_per_token"] / peaks[dtype],
            "first_step_s": runs[0]["first_step_s"],
            "warmup_extra_s": max(0.0, runs[0]["first_step_s"] - runs[0]["step_s"]),  # compile, allocation
            "data_wait_fraction": median(r["data_wait_fraction"] for r in runs) if variant else None,
            "rounds": runs,
        }
    return list(rows.values())


COLUMNS = [
    ("config", "row", ""),
    ("description", "what changes", ""),
    ("precision", "dtype", ""),
    ("step_s", "step s", ".2f"),
    ("tokens_per_s", "tokens/s", ",.0f"),
    ("vs_hf", "x HF", ".2f"),
    ("base", "base row", ""),
    ("vs_base", "x base", ".2f"),
    ("mfu_dtype_peak", "MFU (own dtype peak)", ".1%"),
    ("warmup_extra_s", "warm-up/compile s", ".1f"),
]


def main() -> None:
    args = parse_args()
    machine = machine_info(args.device)
    bench = Bench(args)
    rounds, probes = [], {"fp32": 0.0, "bf16": 0.0}
    for index in range(args.rounds):
        probe = measure_peaks(args.device)  # every round: the best of them is the peak (shared machine)
        probes = {k: max(probes[k], probe[k]) for k in probes}
        print(
            f"round {index + 1}/{args.rounds}: matmul peak probe fp32 {probe['fp32'] / 1e12:.3f} TFLOP/s, "
            f"bf16 {probe['bf16'] / 1e12:.3f} TFLOP/s",
            flush=True,
        )
        rounds.append(bench.measure_round())
    peaks = best_known_peaks(args.device, probes)
    rows = summarise(args, rounds, peaks)
    ours = [r for r in rows if ROWS[r["config"]][1] is not None]
    # paired "x HF" ratios are robust to load swings between rows; raw tokens/s are not
    best = max(ours, key=lambda r: r["vs_hf"] or r["tokens_per_s"]) if ours else None
    hardware = machine["cpu"] if args.device == "cpu" else machine.get("gpu")
    title = (
        f"Pretraining throughput, {args.arch} {args.size} (seq {SEQ_LEN}, {args.batch_size * args.grad_accum} "
        f"sequences/step, masking {args.mlm_probability:.0%}), {args.device}, {hardware}; "
        f"HF baseline in {bench.baseline.precision if bench.baseline else '-'}"
    )
    table = print_table(title, rows, COLUMNS)
    profile = profile_pretrain(ROWS[best["config"]][1], bench.setup, args) if args.profile and best else None
    if best:
        print(
            f"ours (best row '{best['config']}'): {best['tokens_per_s']:,.0f} tokens/s, "
            f"{best['vs_hf'] or float('nan'):.2f}x the HF recipe, MFU {best['mfu_dtype_peak']:.1%} of the "
            f"{best['precision']} peak"
        )
    write_results(
        args.name or f"pretrain_{args.arch}_{args.size}_{args.device}",
        {
            "settings": {k: v for k, v in vars(args).items() if k != "profile"},
            "corpus": workspace.corpus()[1],
            "seq_len": SEQ_LEN,
            "hf_baseline": bench.baseline and bench.baseline.precision,
            "hf_precision_calibration": bench.hf and bench.hf.calibration,
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
