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
"""

from __future__ import annotations

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
