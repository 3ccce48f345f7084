"""Create the Accelerator for a training stage.

The launch config (``accelerate launch --config_file launch/accelerate/*.yaml``) alone decides the
hardware, number of processes, DDP / FSDP / DeepSpeed and mixed precision.  This module only

* applies the CPU-only shim when no CUDA device exists (see :func:`_cpu_state`), so the same
  multi-process paths run over gloo on a CPU box and in CI;
* fills the DeepSpeed config values that Accelerate leaves as "auto" from the ``train`` section
  (micro-batch size, clipping), since our loop does not hand DeepSpeed a dataloader, and makes
  ZeRO-3 gather full weights on save (the export of ``final/`` needs them);
* hides backend differences of the gradient norm (:func:`clip_grad_norm`);
* makes every process load full weights under FSDP (:func:`_full_weights_on_every_process`);
* points TensorBoard at ``<output_dir>/tensorboard``;
* settles the precision (``train.precision`` vs the launch's mixed precision, ``auto`` measured on
  this hardware: :mod:`pipeline.train.precision`), prints it once and keeps it on the Accelerator
  (:func:`precision_of`) for the run's ``summary.json``.
* says what the prepared model really is (:func:`backend_report`): printed at the start of a run,
  and written per process as JSON when ``PIPELINE_TEST_BACKEND_REPORT`` names a directory (the
  distributed tests assert on it, so FSDP or ZeRO silently degrading to DDP fails them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, ProjectConfiguration, parse_flag_from_env

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.train.config import TrainConfig
from pipeline.train.precision import PrecisionChoice, choose_precision

# Set by the test harness only: run FSDP2 on CPU (Accelerate would otherwise fall back to DDP there).
CPU_FSDP_ENV = "PIPELINE_CPU_FSDP"
# (hidden, feed-forward width) the precision probe uses when the caller does not name the model's
DEFAULT_MATMUL_DIMS = (256, 1024)
REPORT_ENV = "PIPELINE_TEST_BACKEND_REPORT"  # tests only: a directory for rank<k>.json backend reports


def _cpu_state() -> PartialState:
    """CPU-only shim, used only when CUDA is absent.

    Accelerate sizes a DeepSpeed/multi-GPU launch by the GPUs it finds; creating the shared
    PartialState with ``cpu=True`` first makes it use the launched processes over gloo instead.
    FSDP is ignored by Accelerate on CPU, so when the test harness asks for it we mark the state
    as multi-device, which lets ``fully_shard`` run for real on CPU tensors.
    """
    state = PartialState(cpu=True)
    if os.environ.get(CPU_FSDP_ENV) == "1" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        state.distributed_type = DistributedType.MULTI_GPU
    return state


def _full_weights_on_every_process() -> None:
    """FSDP: turn off ``fsdp_cpu_ram_efficient_loading`` (on by default in ``accelerate launch``).

    With it, ``from_pretrained`` leaves the weights of every process but rank 0 on the meta device,
    and Accelerate maps the optimizer's parameters to the sharded ones by ``data_ptr`` - 0 for every
    meta tensor - so fine-tuning would silently train with a collapsed optimizer (and crash on the
    first checkpoint).  Our loop creates the optimizer before ``prepare`` (DeepSpeed needs both
    together), so every process loads the full weights instead; encoder checkpoints fit in CPU RAM.
    Both Accelerate's FSDP plugin and transformers read this variable.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"


def _check_launch_matches_hardware() -> None:
    """A single-device launch config with ``use_cpu: false`` (launch/accelerate/single_gpu.yaml, or a
    bare ``accelerate launch``) on a machine without CUDA is a mistake, not a request for a slow CPU
    run. (Multi-process configs on CPU are fine: they run over gloo.)"""
    if os.environ.get("ACCELERATE_USE_CPU") == "False" and not torch.cuda.is_available():
        raise PipelineError(
            "the accelerate launch config asks for a GPU (use_cpu: false) but this machine has no CUDA device: "
            "launch with --config_file launch/accelerate/cpu.yaml (or `accelerate launch --cpu`)"
        )


def _fill_deepspeed_auto(accelerator: Accelerator, cfg: TrainConfig) -> None:
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    for key, ours, name in (
        ("train_micro_batch_size_per_gpu", cfg.batch_size, "train.batch_size"),
        ("gradient_clipping", cfg.max_grad_norm, "train.max_grad_norm"),
    ):
        if ds.get(key, "auto") == "auto":
            ds[key] = ours
        elif float(ds[key]) != float(ours):
            raise PipelineError(
                f"the DeepSpeed config sets {key}={ds[key]} but {name}={ours}: set it to 'auto' (or leave it out) "
                "in the launch config; the pipeline config decides it"
            )
    ds["train_batch_size"] = cfg.global_batch(accelerator.num_processes)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:  # export of final/ needs the full weights gathered from the ZeRO-3 shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True


def make_accelerator(
    cfg: TrainConfig,
    output_dir: str | Path,
    log: bool = True,
    *,
    matmul_dims: tuple[int, int] = DEFAULT_MATMUL_DIMS,
) -> Accelerator:
    """The stage's Accelerator.  ``matmul_dims`` = the model's (hidden size, feed-forward width):
    what ``train.precision=auto`` probes on a CPU."""
    _check_launch_matches_hardware()
    # one Accelerator per stage: `pipeline run` builds several in one process (the process group stays)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    _full_weights_on_every_process()
    # the process group and device now (Accelerator reuses them): the precision choice needs both
    state = (
        PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        if torch.cuda.is_available()
        else _cpu_state()
    )
    choice = choose_precision(
        cfg.precision,
        os.environ.get("ACCELERATE_MIXED_PRECISION"),
        device=state.device,
        matmul_dims=matmul_dims,
        num_processes=state.num_processes,
    )
    project = ProjectConfiguration(
        project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "tensorboard")
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=choice.mixed_precision,
        log_with="tensorboard" if log else None,
        project_config=project,
        step_scheduler_with_optimizer=False,
    )
    accelerator.pipeline_precision = choice  # read back with precision_of()
    console.info(f"precision: {choice.precision} ({choice.reason})")
    _fill_deepspeed_auto(accelerator, cfg)
    return accelerator


def precision_of(accelerator: Accelerator) -> PrecisionChoice | None:
    """The precision :func:`make_accelerator` settled for ``accelerator`` and why (None for an
    Accelerator made elsewhere)."""
    return getattr(accelerator, "pipeline_precision", None)


def clip_grad_norm(accelerator: Accelerator, model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip gradients to ``max_norm`` (0 = no clipping) and return the global norm as a plain tensor.

    Backend differences hidden here: DeepSpeed clips inside its own step (``gradient_clipping``, see
    :func:`_fill_deepspeed_auto`) and reports the norm (None before its first step); FSDP2 returns
    the norm as a replicated DTensor, which cannot be mixed with plain tensors in the loop's sums.
    """
    norm = accelerator.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    if norm is None:
        return torch.tensor(0.0)
    if hasattr(norm, "full_tensor"):  # torch.distributed.tensor.DTensor
        norm = norm.full_tensor()
    return norm if isinstance(norm, torch.Tensor) else torch.tensor(float(norm))


def check_prepared(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """After prepare: the launch config must not override the accumulation we normalise the loss for."""
    if accelerator.gradient_accumulation_steps != cfg.grad_accum:
        raise PipelineError(
            f"the launch config sets gradient_accumulation_steps={accelerator.gradient_accumulation_steps} but "
            f"train.grad_accum={cfg.grad_accum}: set it to 'auto' (or the same value) in the DeepSpeed config"
        )


def backend_report(accelerator: Accelerator, model: torch.nn.Module) -> dict:
    """How this process holds the prepared model: the distributed type, the wrapper class, and per
    parameter its full and local sizes - an FSDP2 DTensor's placements and local shard, a ZeRO-3
    partition (``ds_tensor``); ZeRO-1/2 also the size of this process's optimizer partition."""
    params = {}
    for name, p in model.named_parameters():
        entry = {"shape": list(p.shape), "local_numel": p.numel()}
        if hasattr(p, "placements"):  # torch.distributed.tensor.DTensor
            entry |= {"placements": [str(x) for x in p.placements], "local_numel": p.to_local().numel()}
        if hasattr(p, "ds_tensor"):  # ZeRO-3: p itself is an empty placeholder between gathers
            entry |= {"shape": list(p.ds_shape), "local_numel": p.ds_tensor.numel()}
        params[name] = entry
    report = {
        "distributed_type": str(accelerator.distributed_type.value),
        "processes": accelerator.num_processes,
        "rank": accelerator.process_index,
        "wrapper": type(model).__name__,
        "params": params,
    }
    if hasattr(model, "zero_optimization_stage"):  # a DeepSpeed engine
        report["zero_stage"] = int(model.zero_optimization_stage())
        flat = getattr(model.optimizer, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
        if flat is not None:
            report["optimizer_partition_numel"] = sum(t.numel() for t in flat)
    return report


def announce_backend(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """One line saying how the model is distributed (and the test report, if asked for)."""
    report = backend_report(accelerator, model)
    full = sum(_numel(p["shape"]) for p in report["params"].values())
    local = sum(p["local_numel"] for p in report["params"].values())
    kind = f"ZeRO-{report['zero_stage']}" if "zero_stage" in report else report["distributed_type"]
    console.info(
        f"backend: {kind} ({report['wrapper']}), {report['processes']} process(es); "
        f"this process holds {local / max(full, 1):.0%} of the parameters"
    )
    if os.environ.get(REPORT_ENV):
        out = Path(os.environ[REPORT_ENV])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{report['rank']}.json").write_text(json.dumps(report, indent=1))


def _numel(shape: list[int]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
