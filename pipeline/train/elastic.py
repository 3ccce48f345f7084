"""Load a checkpoint into whatever layout this run has: another process count, or FSDP <-> no FSDP.

A checkpoint's layout is read from its files: ``plain`` (one process or DDP: ``model.safetensors``
+ ``optimizer.bin``, full tensors), ``fsdp`` (``pytorch_model_fsdp_0/`` + ``optimizer_0/``:
torch.distributed.checkpoint (DCP) shards) or ``deepspeed`` (``pytorch_model/``: ZeRO partitions),
and its process count from its ``random_states_<rank>.pkl`` files.  Loading resharding on the way:

* same kind, any process count (plain, fsdp) or the same count (deepspeed): Accelerate's own
  ``load_state``.  DCP stores each tensor's global shape and every shard's offsets, so an FSDP2
  checkpoint loads into any number of FSDP2 processes: each reads the pieces its new shard covers.
* fsdp -> plain: the same DCP read, into this process's full (FQN-keyed) model and optimizer state
  dicts from ``torch.distributed.checkpoint.state_dict`` - the "the state dict of the new layout is
  the template the checkpoint fills" idea of torchtitan's checkpointer.
* plain -> fsdp: the full tensors are sharded by ``set_model_state_dict`` /
  ``set_optimizer_state_dict`` with ``full_state_dict=True``; the optimizer file's parameter
  numbers are mapped to names by the optimizer's parameter order (the same builder made both).
* deepspeed at another process count: DeepSpeed's universal-checkpoint converter writes one
  file per parameter (fp32 weights, Adam moments) and the engine loads that into its new
  partitioning; the converted copy lives beside the checkpoint as a ``.partial`` and is deleted.
* deepspeed <-> anything else: refused with an error that says so (resume under the launch config
  that wrote it, with any process count).

Every path then restores this process's RNG from ``random_states_<rank>.pkl`` and fails if that
file is unreadable (Accelerate only logs it).  A process the checkpoint did not have keeps its
seeded RNG: it only feeds dropout, whose masks depend on the process layout anyway.
"""

from __future__ import annotations

import argparse
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.train.reductions import failed_anywhere

FSDP_MODEL, FSDP_OPTIMIZER, DEEPSPEED_DIR = "pytorch_model_fsdp_0", "optimizer_0", "pytorch_model"


@dataclass(frozen=True)
class Layout:
    kind: str  # "plain" | "fsdp" | "deepspeed"
    processes: int

    def __str__(self) -> str:
        return f"{self.kind} x {self.processes} process{'es' if self.processes != 1 else ''}"


def saved_layout(path: Path) -> Layout:
    """The layout a checkpoint was written in, from its files."""
    kind = (
        "fsdp"
        if (path / FSDP_MODEL).is_dir()
        else "deepspeed"
        if (path / DEEPSPEED_DIR).is_dir()
        else "plain"
    )
    return Layout(kind, max(len(list(path.glob("random_states_*.pkl"))), 1))


def current_layout(accelerator) -> Layout:
    kinds = {DistributedType.FSDP: "fsdp", DistributedType.DEEPSPEED: "deepspeed"}
    return Layout(kinds.get(accelerator.distributed_type, "plain"), accelerator.num_processes)


def load_checkpoint(accelerator, model, optimizer, path: Path) -> None:
    """Collective: load checkpoint ``path`` into the prepared ``model`` / ``optimizer``, resharding
    it if this run's layout differs from the one that wrote it (see the module docstring)."""
    saved, now = saved_layout(path), current_layout(accelerator)
    if saved.kind == now.kind and (saved.kind != "deepspeed" or saved.processes == now.processes):
        accelerator.load_state(str(path))
    elif saved.kind == now.kind == "deepspeed":
        _load_zero_resharded(accelerator, model, path)
    elif "deepspeed" in (saved.kind, now.kind):
        raise PipelineError(
            f"checkpoint {path} was written by {saved} and this run is {now}: a DeepSpeed checkpoint "
            "resumes only under DeepSpeed (any process count) and DeepSpeed only from its own checkpoints; "
            "relaunch with the launch config that wrote it"
        )
    elif saved.kind == "fsdp":
        _load_dcp(model, optimizer, path)
    else:
        _load_full(model, optimizer, path)
    if saved.kind != now.kind and accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(_safe_load(path / "scaler.pt"))
    restore_rng(path, accelerator.process_index, required=accelerator.process_index < saved.processes)
    if saved != now:
        console.info(f"resharded checkpoint {path.name}: written by {saved}, loaded by {now}")


def _safe_load(file: Path):
    from accelerate.utils.other import load  # torch.load(weights_only=True) + numpy RNG types allowed

    return load(file, map_location="cpu")


def restore_rng(path: Path, rank: int, required: bool) -> None:
    """Set Python's, NumPy's and torch's RNG from ``random_states_<rank>.pkl``."""
    file = path / f"random_states_{rank}.pkl"
    if not required and not file.is_file():
        return
    try:
        states = _safe_load(file)
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if torch.cuda.is_available():  # a node with fewer GPUs than the writer's keeps the first ones
            for device, state in enumerate(
                states.get("torch_cuda_manual_seed", [])[: torch.cuda.device_count()]
            ):
                torch.cuda.set_rng_state(state, device)
    except Exception as e:  # noqa: BLE001 - any unreadable RNG file makes the checkpoint unreadable
        raise PipelineError(f"{file.name} could not be read ({type(e).__name__}: {e})") from None


def _load_dcp(model, optimizer, path: Path) -> None:
    """An FSDP (DCP) checkpoint into a model that is not FSDP-sharded: fill its full state dicts."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as dcp_load
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    weights = get_model_state_dict(model)
    state = get_optimizer_state_dict(model, optimizer)  # creates the (empty) Adam moments to fill
    with warnings.catch_warnings():  # one process, no process group: DCP says it assumes so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp_load({"model": weights}, storage_reader=FileSystemReader(path / FSDP_MODEL))
        dcp_load({"optimizer": state}, storage_reader=FileSystemReader(path / FSDP_OPTIMIZER))
    set_model_state_dict(model, weights)
    set_optimizer_state_dict(model, optimizer, state)


def _load_full(model, optimizer, path: Path) -> None:
    """A plain checkpoint (full tensors) into an FSDP2 model: every process shards the full state."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    full = StateDictOptions(full_state_dict=True, strict=False)  # strict=False: tied copies are not saved
    result = set_model_state_dict(model, load_file(path / "model.safetensors"), options=full)
    _check_only_tied_missing(model, result.missing_keys, result.unexpected_keys, path)
    state = _optimizer_state_by_name(_safe_load(path / "optimizer.bin"), model, optimizer)
    set_optimizer_state_dict(model, optimizer, state, options=full)


def _check_only_tied_missing(model, missing, unexpected, path: Path) -> None:
    names_of = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    saved = {name for names in names_of.values() for name in names if name not in missing}
    untied = [name for names in names_of.values() if not saved & set(names) for name in names]
    if untied or unexpected:
        raise PipelineError(
            f"checkpoint {path} does not fit this model: missing {sorted(untied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def _optimizer_state_by_name(saved: dict, model, optimizer) -> dict:
    """``optimizer.state_dict()`` keys parameters by number in optimizer order; key them by name."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    numbers = [n for group in saved["param_groups"] for n in group["params"]]
    if len(numbers) != len(names):
        raise PipelineError(
            f"the checkpoint's optimizer has {len(numbers)} parameters, this model {len(names)}"
        )
    by_number = dict(zip(numbers, names))
    groups = [{**g, "params": [by_number[n] for n in g["params"]]} for g in saved["param_groups"]]
    return {"state": {by_number[n]: s for n, s in saved["state"].items()}, "param_groups": groups}


def _load_zero_resharded(accelerator, engine, path: Path) -> None:
    """A ZeRO checkpoint of another process count: convert to DeepSpeed's universal format (one
    file per parameter and state) on the main process, then load it into this partitioning."""
    universal = path.with_name(path.name + ".universal.partial")  # removed by the next save if left
    _on_main_then_agree(accelerator, lambda: _to_universal(path / DEEPSPEED_DIR, universal / DEEPSPEED_DIR))
    base = engine.optimizer.optimizer  # the torch AdamW inside DeepSpeed's ZeRO optimizer
    groups = [{k: v for k, v in g.items() if k != "params"} for g in base.param_groups]
    engine._config.load_universal_checkpoint = True  # no public switch once the engine exists
    try:
        loaded, _ = engine.load_checkpoint(str(universal), tag=DEEPSPEED_DIR)
        _undo_zero3_universal_slips(base, groups)
    finally:
        engine._config.load_universal_checkpoint = False
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(universal, ignore_errors=True)
    if loaded is None:
        raise PipelineError(f"DeepSpeed could not load the converted checkpoint {universal}")


def _undo_zero3_universal_slips(base, groups: list[dict]) -> None:
    """Two slips of DeepSpeed's ZeRO-3 universal loader (0.19): it gives every parameter group
    group 0's hyperparameters (weight decay on biases and norms; ours come from the config), and
    one shared ``step`` tensor to every flat partition, which AdamW increments in place once per
    partition - so Adam's bias correction would run ahead.  Both are put right here."""
    for group, settings in zip(base.param_groups, groups):
        group.update(settings)
    for state in base.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _to_universal(source: Path, target: Path) -> None:
    from deepspeed.checkpoint import ds_to_universal

    shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.mkdir(parents=True)
    args = argparse.Namespace(
        input_folder=str(source),
        output_folder=str(target),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # data parallel only: no tensor-parallel layout info to record
    )
    ds_to_universal.main(args)


def _on_main_then_agree(accelerator, job) -> None:
    """Run ``job`` on the main process; every process raises if it failed (no one waits forever)."""
    error = None
    if accelerator.is_main_process:
        try:
            job()
        except Exception as e:  # noqa: BLE001 - reported on every process below
            error = e
    if failed_anywhere(accelerator, error):
        raise PipelineError(f"converting the checkpoint failed on the main process: {error or 'see its log'}")
