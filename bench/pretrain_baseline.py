"""The baseline side of ``bench.pretrain_throughput``: the run_mlm_no_trainer recipe (``bench.hf_recipes``)
at the benchmark's model dimensions, and the choice of its best precision on this machine.

The comparison that counts is against the recipe at *its* best setting: :meth:`HFSide.best_precision`
alternates fp32 and bf16-autocast steps of the recipe (``accelerate --mixed_precision bf16``, what a
user of the example would try) and keeps the faster; every row of ours is then paired with that.
Not run directly.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from transformers import AutoTokenizer, BertConfig, ModernBertConfig

from bench import workspace
from bench.hf_recipes import HFMlmTrainer, mlm_dataset
from bench.ours import Interleave
from pipeline.mlm import PRESETS, mlm_flops_per_token

SEQ_LEN = 128


@dataclass(frozen=True)
class HFRecipe:
    """Settings of a baseline row: the HF recipe as written, or with one knob changed."""

    precision: str = "no"  # accelerate mixed precision
    dropout: float | None = None  # None = the config's default (BERT 0.1, ModernBERT 0), as in the example


def hf_config(arch: str, preset: str, tokenizer):
    """The model config the example would build for these dims (``AutoModelForMaskedLM.from_config``)."""
    dims = PRESETS[preset]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden_size"],
        num_hidden_layers=dims["num_layers"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=dims["intermediate_size"],
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "bert":
        return BertConfig(**common)
    ids = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id}
    return ModernBertConfig(
        bos_token_id=ids["cls_token_id"], eos_token_id=ids["sep_token_id"], **ids, **common
    )


def _with_dropout(config, dropout: float | None):
    if dropout is None:
        return config
    keys = (
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "embedding_dropout",
        "mlp_dropout",
        "attention_dropout",
    )
    return type(config)(**{**config.to_dict(), **{k: dropout for k in keys if hasattr(config, k)}})


class HFSide:
    """The baseline's tokenizer, grouped dataset and model config (built once, reused every round)."""

    def __init__(self, args):
        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(args.vocab))
        text, _ = workspace.corpus()
        self.dataset = mlm_dataset(
            self.tokenizer, text, SEQ_LEN, cache_dir=str(workspace.CACHE_DIR / "hf-datasets")
        )
        self.config = hf_config(args.arch, args.preset, self.tokenizer)
        self.tokens_per_step = args.batch_size * args.grad_accum * SEQ_LEN
        self.flops_per_token = mlm_flops_per_token(
            self.config, SEQ_LEN, SEQ_LEN
        )  # dense head: every position
        self._steps: dict[HFRecipe, object] = {}
        self.calibration: dict | None = None

    def steps(self, recipe: HFRecipe):
        """One trainer per recipe, kept across rows and rounds (its first step is its warm-up)."""
        if recipe not in self._steps:
            trainer = HFMlmTrainer(
                _with_dropout(self.config, recipe.dropout),
                self.tokenizer,
                self.dataset,
                batch_size=self.args.batch_size,
                grad_accum=self.args.grad_accum,
                mixed_precision=recipe.precision,
                mlm_probability=self.args.mlm_probability,
            )
            self._steps[recipe] = trainer.steps()
        return self._steps[recipe]

    def partner(self, recipe: HFRecipe, sync=None) -> Interleave:
        return Interleave(self.steps(recipe), sync=sync)

    def standalone(self, recipe: HFRecipe, total_steps: int, sync=None) -> list[float]:
        partner = self.partner(recipe, sync)
        for _ in range(total_steps):
            partner()
        return partner.durations

    def best_precision(self, choice: str, steps: int, sync=None) -> HFRecipe:
        """The recipe at ``choice`` (fp32 | bf16), or for ``best`` at whichever of the two ran faster
        in ``steps`` alternating step pairs after one warm-up step each (recorded in ``calibration``)."""
        if choice != "best":
            return HFRecipe("no" if choice == "fp32" else "bf16")
        sides = {
            name: self.partner(HFRecipe(mode), sync) for name, mode in (("fp32", "no"), ("bf16", "bf16"))
        }
        for _ in range(steps + 1):
            for partner in sides.values():
                partner()
        ratios = [fp32 / bf16 for fp32, bf16 in zip(sides["fp32"].durations[1:], sides["bf16"].durations[1:])]
        speedup = statistics.median(ratios)
        best = "bf16" if speedup > 1 else "fp32"
        self.calibration = {
            "chosen": best,
            "bf16_speedup_over_fp32": speedup,
            "step_s": {name: partner.durations for name, partner in sides.items()},
        }
        print(f"HF recipe: bf16 autocast runs at {speedup:.2f}x fp32 here -> baseline = {best}", flush=True)
        return HFRecipe("no" if best == "fp32" else "bf16")
