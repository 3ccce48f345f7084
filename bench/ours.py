"""The pipeline side of the benchmarks: the real stages and the real ``fit`` loop, instrumented.

:func:`run_pretrain` builds the pretraining task exactly as ``pipeline pretrain`` does
(``pipeline.stages.pretrain.build_task``: ShardReader -> Masker -> SparseMLM, FLOPs per token) and
trains it with ``pipeline.train.fit``.  :func:`instrumented_fit` returns the loop's
:class:`~pipeline.train.FitHooks` for a run, which change nothing a training step does:

* ``wrap_stream`` timestamps every request for a micro-batch (a step's period is the time between
  consecutive requests; the time blocked inside the request is the wait for data);
* ``checkpoints`` is a manager whose ``save`` writes nothing (checkpoints fall outside the timed
  steps, but writing BERT-base optimizer state after every short run would dominate the
  benchmark's wall time);
* ``optimizer`` can be torch's default (unfused) AdamW, for the ablation.

At every step boundary a callback may run outside the timed intervals: :class:`Interleave` runs
one step of a baseline there, so the baseline and our loop alternate step by step in one process
and share whatever load the machine has at that moment.

:class:`DenseMLM` is the ablation's "no sparse head" model: Hugging Face's own dense MLM loss
(head and cross-entropy at every position) behind SparseMLM's interface.  Not run directly.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.mlm import SparseMLM, mlm_flops_per_token
from pipeline.shards import read_manifest
from pipeline.train import IGNORE_INDEX, CheckpointManager, FitHooks, TrainerState, build_optimizer, fit


class DenseMLM(SparseMLM):
    """SparseMLM's inputs and outputs, Hugging Face's dense computation (``BertForMaskedLM(labels=)``)."""

    def forward(self, input_ids, attention_mask, mlm_positions, mlm_labels):
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels.scatter_(1, mlm_positions, mlm_labels)  # empty slots point at [CLS] with label -100
        out = self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        count = (labels != IGNORE_INDEX).sum()
        # accuracy (the loop logs it) from the predicted slots only: no extra pass over all logits
        index = mlm_positions.unsqueeze(-1).expand(-1, -1, out.logits.size(-1))
        hits = out.logits.gather(1, index).argmax(dim=-1) == mlm_labels
        correct = (hits & (mlm_labels != IGNORE_INDEX)).sum()
        return {"loss_sum": out.loss * count, "count": count.float(), "correct": correct.float()}


@dataclass
class StepTimes:
    """Step boundaries: ``tick()`` at each one (a batch request, or an optimizer step of a baseline).

    ``on_tick`` runs at every boundary *outside* the timed intervals: a profiler's ``step()``, or
    one step of a baseline (:class:`Interleave`), so two loops alternate step by step and see the
    same machine load."""

    sync: object = None  # e.g. torch.cuda.synchronize: make a timestamp mean "the device is done"
    on_tick: object = None
    ends: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def tick(self) -> float:
        if self.sync is not None:
            self.sync()
        self.ends.append(time.perf_counter())
        if self.on_tick is not None:
            self.on_tick()
        self.starts.append(time.perf_counter())
        return self.starts[-1]

    @property
    def durations(self) -> list[float]:
        return [end - start for start, end in zip(self.starts, self.ends[1:])]


class Interleave:
    """An ``on_tick`` that runs (and times) one step of another training loop, given as a generator
    that yields once per optimizer step (``bench.hf_recipes``' trainers)."""

    def __init__(self, steps, sync=None):
        self.steps, self.sync, self.durations = steps, sync, []

    def __call__(self) -> None:
        start = time.perf_counter()
        next(self.steps)
        if self.sync is not None:
            self.sync()
        self.durations.append(time.perf_counter() - start)


def _timed_stream(inner: Iterator[dict], times: StepTimes, grad_accum: int) -> Iterator[dict]:
    try:
        for index in range(1 << 62):
            start = times.tick() if index % grad_accum == 0 else time.perf_counter()
            item = next(inner)
            blocked = time.perf_counter() - start
            if index % grad_accum == 0:
                times.waits.append(blocked)
            else:
                times.waits[-1] += blocked
            yield item
    finally:
        inner.close()


class _NoWriteCheckpoints(CheckpointManager):
    def save(self, accelerator, state: TrainerState) -> Path:
        return self.root / f"step_{state.step}"


def instrumented_fit(times: StepTimes, grad_accum: int, fused_adamw: bool = True) -> FitHooks:
    """The loop's hooks for a timed run (see the module docstring)."""
    return FitHooks(
        optimizer=functools.partial(build_optimizer, fused=fused_adamw),
        checkpoints=_NoWriteCheckpoints,
        wrap_stream=lambda stream: _timed_stream(stream, times, grad_accum),
    )


@contextmanager
def mixed_precision(mode: str | None):
    """Mixed precision the way a user sets it: ``accelerate launch --mixed_precision`` exports this
    variable; None = no launcher value (``train.precision`` decides, ``auto`` by default)."""
    old = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if mode is None:
        os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
    else:
        os.environ["ACCELERATE_MIXED_PRECISION"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        else:
            os.environ["ACCELERATE_MIXED_PRECISION"] = old


@dataclass(frozen=True)
class Variant:
    """One configuration of our pretraining step (a row of the ablation).  Defaults = the pipeline's
    defaults except where the ablation starts from the HF recipe's settings (dropout 0.1, SDPA)."""

    sparse_head: bool = True
    fused_adamw: bool = True
    precision: str = "auto"  # train.precision: auto (the pipeline default) | fp32 | bf16
    dropout: float = 0.1  # model.dropout (BERT's 0.1 = the HF recipe's; 0 = the pipeline default)
    attention: str = "sdpa"  # model.attn_implementation (auto = the pipeline default: eager on CPU)
    compile: bool = False  # train.compile
    compile_mode: str | None = None  # bench only: torch.compile(mode=...) instead of train.compile
    compile_dynamic: bool | None = None  # bench only: torch.compile(dynamic=...)
    document_mask: bool = False  # mlm.document_mask


@dataclass(frozen=True)
class PretrainSetup:
    """What every row of one benchmark run shares: data, model size and batch."""

    shards: Path
    arch: str
    preset: str
    batch_size: int
    grad_accum: int
    mlm_probability: float = 0.15


def pretrain_config(
    setup: PretrainSetup, variant: Variant, output_dir: Path, max_steps: int, prefetch: int = 4
):
    from pipeline.stages import pretrain

    overrides = [
        f"data.shards={setup.shards}",
        f"output_dir={output_dir}",
        f"model.arch={setup.arch}",
        f"model.preset={setup.preset}",
        f"model.dropout={variant.dropout}",
        f"model.attn_implementation={variant.attention}",
        f"mlm.probability={setup.mlm_probability}",
        f"mlm.document_mask={str(variant.document_mask).lower()}",
        f"train.max_steps={max_steps}",
        f"train.batch_size={setup.batch_size}",
        f"train.grad_accum={setup.grad_accum}",
        f"train.precision={variant.precision}",
        "train.lr=5e-4",
        "train.warmup_steps=0",
        "train.eval_every=0",
        "train.save_every=0",
        f"train.log_every={max_steps}",
        "train.peak_tflops=1",
        "train.progress=false",
        "train.resume=never",
        f"train.compile={str(variant.compile).lower()}",
        f"train.prefetch={prefetch}",
    ]
    return load_config(pretrain.Config, None, overrides)


def _compile_for_bench(model: torch.nn.Module, variant: Variant) -> None:
    """torch.compile modes the config does not offer (rows that measure them)."""
    if variant.compile_mode is None and variant.compile_dynamic is None:
        return
    kwargs = {"mode": variant.compile_mode, "dynamic": variant.compile_dynamic}
    model.compile(**{k: v for k, v in kwargs.items() if v is not None})


def run_pretrain(
    variant: Variant, setup: PretrainSetup, *, steps: int, prefetch: int = 4, on_tick=None
) -> dict:
    """Train ``steps`` optimizer steps with the real stage + loop; returns ``steps - 1`` step durations
    (the first includes compilation / warm-up), the data waits, tokens per step, FLOPs per token and
    the precision the run chose."""
    from pipeline.stages.pretrain import build_task
    from pipeline.train import make_accelerator
    from pipeline.train.accel import precision_of

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as out, mixed_precision(None):
        cfg = pretrain_config(setup, variant, Path(out), steps, prefetch)
        accelerator = make_accelerator(cfg.train, out, log=False, matmul_dims=cfg.model.matmul_dims())
        task, train = build_task(cfg, accelerator)
        task.evaluate, task.export = None, lambda *args: None
        seq_len = int(read_manifest(setup.shards)[1]["seq_len"])
        if not variant.sparse_head:
            task.model = DenseMLM(task.model.mlm)
            task.flops_per_token = mlm_flops_per_token(
                task.model.mlm.config, seq_len, seq_len
            )  # head everywhere
        _compile_for_bench(task.model, variant)
        times = StepTimes(
            sync=torch.cuda.synchronize if accelerator.device.type == "cuda" else None, on_tick=on_tick
        )
        hooks = instrumented_fit(times, setup.grad_accum, fused_adamw=variant.fused_adamw)
        summary = fit(accelerator, train, task, out, cfg, hooks=hooks)
    # intervals between batch requests: steps - 1 complete step periods (the last step ends inside
    # fit's shutdown, which is not timed)
    return {
        "durations": times.durations,
        "waits": times.waits[: len(times.durations)],
        "tokens_per_step": train.global_batch(accelerator.num_processes) * seq_len,
        "flops_per_token": task.flops_per_token,
        "precision": precision_of(accelerator).precision,
        "summary": summary,
    }


_OP_GROUPS = {  # profiler op name prefix -> where the step's time goes
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    "SDPA attention kernels": ("aten::_scaled_dot_product",),
    "kernels fused by torch.compile (elementwise, norms, softmax, loss)": ("graph_",),
    "casts and copies": ("aten::copy_", "aten::_to_copy"),
    "optimizer": ("aten::_fused_adamw_", "Optimizer.step", "aten::_foreach", "aten::lerp", "aten::addcmul"),
}


def profile_pretrain(variant: Variant, setup: PretrainSetup, args) -> dict:
    """torch.profiler over two steady-state steps of ``variant``: top ops and the matmul share."""
    import torch._inductor.config
    from torch.profiler import ProfilerActivity, profile, schedule

    torch._inductor.config.cpp.enable_kernel_profile = True  # compiled CPU kernels appear by name
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    plan = schedule(wait=args.warmup + 1, warmup=1, active=2, repeat=1)
    with profile(activities=activities, schedule=plan) as prof:
        run_pretrain(variant, setup, steps=args.warmup + 6, on_tick=prof.step)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    table = events.table(sort_by=attr, row_limit=20, max_name_column_width=70)
    print(table)
    total = sum(getattr(e, attr) for e in events) or 1.0
    shares = {
        group: sum(getattr(e, attr) for e in events if e.key.startswith(names)) / total
        for group, names in _OP_GROUPS.items()
    }
    shares["other eager ops (elementwise, norms, softmax, dropout)"] = 1.0 - sum(shares.values())
    print("share of profiled op time: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    return {"variant": str(variant), "top_ops": table, "time_shares": shares}
