"""Time to quality: our pretraining recipe vs the ``run_mlm_no_trainer`` recipe on the same machine,
tokenizer and text, each given wall-clock time, both scored by one evaluator that belongs to
neither side (:mod:`bench.probe`: held-out WikiText-2, Hugging Face's collator masks, fixed seed).

    python -m bench.time_to_loss                       # ~45 min on 2 cores: HF lr sweep, HF 15 min, ours, probes
    python -m bench.time_to_loss --budget 60 --sweep-budget 20 --lrs 1e-3 --snapshots 2 --rows 64 --name ttl_smoke

1. Data: the quickstart's tokenizer settings (WordPiece, ``--vocab``) and the corpus (WikiText-2
   train), shards for ours (``pipeline shard``), ``datasets.map`` + ``group_texts`` for HF.
2. HF side: ``BertForMaskedLM`` with our model's hidden size, layers and heads (BERT's 4x
   feed-forward, its default dropout 0.1), the example's collator, AdamW and linear schedule; its
   precision is whichever of fp32 / bf16 autocast runs its step faster here (timed first), and its
   learning rate the best of a short sweep (``--lrs``, ``--sweep-budget`` seconds each, probed).
   The schedule is sized from a measured step rate so it ends at ``--budget`` seconds.
3. Ours: the ``pretrain`` section of ``configs/quickstart.yaml`` as a user runs it, through the
   real stage and loop (``run_training_stage``); precision and everything else as configured.
4. Snapshots (``--snapshots`` per run) are exported outside the clock; seconds count training only
   (data loading included, snapshot export excluded).  Every snapshot is probed afterwards.
5. Both curves start at step 0 (the untrained model, 0 s).  Result: loss and context gain vs
   seconds for both, and ``speedup`` = HF's seconds to its final
   probe loss / our seconds to reach the same loss (linear interpolation between snapshots).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from bench.common import CACHE_DIR, REPO, machine_info, print_table, quiet_environment, write_results

quiet_environment()

from bench import workspace  # noqa: E402
from bench.probe import probe  # noqa: E402

QUICKSTART = REPO / "configs" / "quickstart.yaml"


class Clock:
    """Training seconds: wall time since ``start()`` minus the time spent in ``paused()`` blocks."""

    def __init__(self):
        self.began, self.excluded = None, 0.0

    def start(self) -> None:
        if self.began is None:
            self.began = time.perf_counter()

    def seconds(self) -> float:
        return 0.0 if self.began is None else time.perf_counter() - self.began - self.excluded

    def exclude(self, since: float) -> None:
        self.excluded += time.perf_counter() - since


def _pretrain_config(shards: Path, out: Path, snapshots: int, max_steps: int = 0, overrides=None):
    from pipeline.config import from_dict
    from pipeline.stages import pretrain

    section = yaml.safe_load(QUICKSTART.read_text())["pretrain"]
    for dotted, value in (overrides or {}).items():  # "model.arch": "bert" -> section["model"]["arch"]
        *parents, key = dotted.split(".")
        node = section
        for name in parents:
            node = node.setdefault(name, {})
        node[key] = value
    if max_steps:  # a shorter run for smoke checks
        section["train"].update(
            max_steps=max_steps, warmup_steps=min(section["train"].get("warmup_steps", 0), max_steps // 2)
        )
    max_steps = int(section["train"]["max_steps"])
    section["data"] = {**section.get("data", {}), "shards": str(shards)}
    section["output_dir"] = str(out)
    section["train"].update(
        save_every=max(1, max_steps // snapshots), keep_checkpoints=10**6, resume="never", progress=False
    )
    return from_dict(pretrain.Config, section)


def run_ours(shards: Path, out: Path, snapshots: int, max_steps: int = 0, overrides=None) -> list[dict]:
    """Our recipe (the quickstart's ``pretrain`` section, with dotted-key ``overrides``) through the
    real stage; a snapshot (HF export) at every ``save_every``."""
    from pipeline.stages import pretrain
    from pipeline.train import CheckpointManager, FitHooks, run_training_stage

    cfg = _pretrain_config(shards, out, snapshots, max_steps, overrides)
    clock, taken, tasks = Clock(), [], []

    def build(cfg, accelerator, output_dir):
        task, train = pretrain.build_task(cfg, accelerator, output_dir)
        task.evaluate = None  # the probe scores the snapshots; evaluation time is not training time
        tasks.append((accelerator, task))
        return task, train

    def snapshot(step: int) -> None:
        seconds, paused = clock.seconds(), time.perf_counter()
        path = out / "snapshots" / f"step_{step}"
        acc, task = tasks[0]
        task.export(acc, task.model, path)
        taken.append({"step": step, "seconds": seconds, "dir": str(path)})
        clock.exclude(paused)

    class Snapshots(CheckpointManager):
        def save(self, accelerator, state) -> Path:
            snapshot(state.step)
            return out / "snapshots" / f"step_{state.step}"

    def timed(stream):
        for item in stream:
            if clock.began is None:
                snapshot(0)  # the untrained model: where both curves start
                clock.start()
            yield item

    hooks = FitHooks(checkpoints=Snapshots, wrap_stream=timed)
    if run_training_stage(cfg, build, hooks=hooks) != 0:
        raise SystemExit("our pretraining run failed")
    return taken


def _hf_config(tokenizer):
    from transformers import BertConfig

    from pipeline.mlm.models import resolve_dims

    pretrain_cfg = _pretrain_config(Path("."), Path("."), 1)
    dims = resolve_dims(pretrain_cfg.model)
    hidden = dims["hidden_size"]
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=dims["num_layers"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=4 * hidden,
    ), pretrain_cfg.train.batch_size


def _hf_trainer(tokenizer, dataset, lr: float, precision: str, max_steps: int):
    from bench.hf_recipes import HFMlmTrainer

    config, batch_size = _hf_config(tokenizer)
    return HFMlmTrainer(
        config,
        tokenizer,
        dataset,
        batch_size=batch_size,
        max_steps=max_steps,
        mixed_precision=precision,
        lr=lr,
    )


def hf_step_seconds(tokenizer, dataset, precision: str, steps: int = 12) -> float:
    """Median seconds per optimizer step of the HF recipe at ``precision`` (after 2 warm-up steps)."""
    stream = _hf_trainer(tokenizer, dataset, 1e-4, precision, 10**6).steps()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        next(stream)
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]


def run_hf(
    tokenizer, dataset, lr, precision, budget, step_seconds, snapshots, out: Path, from_start: bool = True
) -> list[dict]:
    """The HF recipe for ``budget`` training seconds, its schedule sized from ``step_seconds``;
    ``from_start`` adds a snapshot of the untrained model."""
    max_steps = max(1, int(budget / step_seconds))
    trainer = _hf_trainer(tokenizer, dataset, lr, precision, max_steps)
    stream, clock, taken = trainer.steps(), Clock(), []
    due = [budget * (k + 1) / snapshots for k in range(snapshots)]

    def snapshot(step: int) -> None:
        seconds, paused = clock.seconds(), time.perf_counter()
        path = out / f"step_{step}"
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(path)
        tokenizer.save_pretrained(path)
        taken.append({"step": step, "seconds": seconds, "dir": str(path)})
        clock.exclude(paused)

    if from_start:
        snapshot(0)
    clock.start()
    for step in range(1, max_steps + 1):
        next(stream)
        seconds = clock.seconds()
        if seconds < due[0] and step < max_steps:
            continue
        snapshot(step)
        while due and seconds >= due[0]:
            due.pop(0)
        if not due:
            break
    return taken


def score(snapshots: list[dict], rows: int) -> list[dict]:
    for snap in snapshots:
        snap.update(probe(snap["dir"], rows=rows))
    return snapshots


def seconds_to_reach(curve: list[dict], target: float) -> float | None:
    """First time the probe loss reaches ``target``, interpolated linearly between snapshots."""
    previous = curve[0]
    for point in curve:
        if point["probe_loss"] <= target:
            if point is curve[0]:
                return point["seconds"]
            frac = (previous["probe_loss"] - target) / (previous["probe_loss"] - point["probe_loss"])
            return previous["seconds"] + frac * (point["seconds"] - previous["seconds"])
        previous = point
    return None


def _rows(curve: list[dict]) -> list[dict]:
    keys = ("seconds", "step", "probe_loss", "probe_accuracy", "context_gain")
    return [{k: point[k] for k in keys} for point in curve]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=900, help="HF training seconds (default 15 min)")
    parser.add_argument("--sweep-budget", type=float, default=120, help="seconds per HF learning rate")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3", help="HF learning rates to sweep")
    parser.add_argument("--snapshots", type=int, default=8, help="probed snapshots per run")
    parser.add_argument("--rows", type=int, default=1024, help="probe blocks of 128 tokens (0 = all)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--name", default="time_to_loss")
    parser.add_argument("--our-steps", type=int, default=0, help="override our max_steps (smoke checks only)")
    args = parser.parse_args()
    machine = machine_info()
    from transformers import AutoTokenizer

    from bench.hf_recipes import mlm_dataset

    tokenizer = AutoTokenizer.from_pretrained(workspace.tokenizer(args.vocab))
    text, corpus_name = workspace.corpus()
    dataset = mlm_dataset(tokenizer, text, 128, cache_dir=str(CACHE_DIR / "hf-datasets"))
    shards = workspace.shards(args.vocab)
    root = CACHE_DIR / f"{args.name}-runs"
    # 1. the HF recipe at its faster precision and its best learning rate
    step_s = {p: hf_step_seconds(tokenizer, dataset, p) for p in ("no", "bf16")}
    precision = min(step_s, key=step_s.get)
    sweep = []
    for lr in (float(x) for x in args.lrs.split(",")):
        snaps = run_hf(
            tokenizer,
            dataset,
            lr,
            precision,
            args.sweep_budget,
            step_s[precision],
            1,
            root / f"sweep-{lr:g}",
            False,
        )
        sweep.append({"lr": lr, **_rows(score(snaps, args.rows))[-1]})
        print(f"HF sweep: lr {lr:g}: probe loss {sweep[-1]['probe_loss']:.3f}", flush=True)
    best_lr = min(sweep, key=lambda r: r["probe_loss"])["lr"]
    hf = score(
        run_hf(
            tokenizer,
            dataset,
            best_lr,
            precision,
            args.budget,
            step_s[precision],
            args.snapshots,
            root / "hf",
        ),
        args.rows,
    )
    # 2. ours, as configs/quickstart.yaml trains it
    ours = score(run_ours(shards, root / "ours", args.snapshots, args.our_steps), args.rows)
    target = hf[-1]["probe_loss"]
    ours_seconds = seconds_to_reach(ours, target)
    speedup = hf[-1]["seconds"] / ours_seconds if ours_seconds else None
    columns = [
        ("seconds", "seconds", ".0f"),
        ("step", "step", "d"),
        ("probe_loss", "probe loss", ".3f"),
        ("probe_accuracy", "probe accuracy", ".3f"),
        ("context_gain", "context gain (nats)", ".2f"),
    ]
    print_table(f"HF run_mlm_no_trainer recipe (lr {best_lr:g}, {precision})", _rows(hf), columns)
    print_table("ours (configs/quickstart.yaml pretrain)", _rows(ours), columns)
    print(
        f"HF final probe loss {target:.3f} after {hf[-1]['seconds']:.0f} s; ours reaches it after "
        f"{ours_seconds if ours_seconds is None else round(ours_seconds, 1)} s: speedup {speedup}"
    )
    write_results(
        args.name,
        {
            "corpus": corpus_name,
            "vocab": args.vocab,
            "probe_rows": args.rows,
            "hf": {
                "precision": precision,
                "step_seconds": step_s,
                "lr_sweep": sweep,
                "lr": best_lr,
                "budget_s": args.budget,
                "curve": _rows(hf),
            },
            "ours": {"config": yaml.safe_load(QUICKSTART.read_text())["pretrain"], "curve": _rows(ours)},
            "target_probe_loss": target,
            "ours_seconds_to_target": ours_seconds,
            "speedup": speedup,
        },
        machine,
    )


if __name__ == "__main__":
    main()
