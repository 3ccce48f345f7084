"""Export any checkpoint of a pretrain or finetune run as a standard Hugging Face model directory.

Run:
    pipeline export run_dir=runs/pretrain-tiny                                  # newest complete checkpoint
    pipeline export run_dir=runs/pretrain-tiny checkpoint=runs/pretrain-tiny/checkpoints/step_30 output_dir=out/step30
    accelerate launch --config_file launch/accelerate/fsdp.yaml -m pipeline export run_dir=...   # sharded checkpoints

The run's own ``config.yaml`` rebuilds the model; the checkpoint is loaded as a resume would load it
(resharded to this launch's layout: an FSDP checkpoint exports from one plain process too; a ZeRO
checkpoint needs DeepSpeed, with any process count) and the full weights are gathered and written
as safetensors plus the tokenizer, loadable with the Auto classes and no project import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import console
from pipeline.config import REQUIRED, from_dict, option, read_yaml
from pipeline.errors import PipelineError
from pipeline.stages import finetune, pretrain
from pipeline.train import (
    CheckpointManager,
    build_optimizer,
    check_checkpoint,
    load_checkpoint,
    make_accelerator,
)


@dataclass
class Config:
    run_dir: str = option(
        REQUIRED, "output_dir of a pretrain or finetune run (holds config.yaml and checkpoints/)"
    )
    checkpoint: str = option("latest", "'latest' (newest complete checkpoint) or a checkpoint directory")
    output_dir: str | None = option(None, "where to write the model (default: <run_dir>/export/step_<N>)")


def _stage_of(run_dir: Path):
    """The stage module that wrote ``run_dir`` and its config, from the ``config.yaml`` it saved
    (a fine-tuning config is the one with a ``task`` section)."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise PipelineError(f"{run_dir} has no config.yaml: not the output_dir of a pretrain or finetune run")
    saved = read_yaml(config_file)
    module = finetune if "task" in saved else pretrain
    return module, from_dict(module.Config, saved)


def _checkpoint(cfg: Config, run_dir: Path) -> tuple[Path, int]:
    if cfg.checkpoint == "latest":
        found = CheckpointManager(run_dir / "checkpoints", keep=1).latest_complete()
        if found is None:
            raise PipelineError(f"no complete checkpoint in {run_dir / 'checkpoints'}")
        return found[0], int(found[1]["step"])
    path = Path(cfg.checkpoint)
    return path, int(check_checkpoint(path)["step"])


def _output_dir(cfg: Config, step: int) -> Path:
    return Path(cfg.output_dir) if cfg.output_dir else Path(cfg.run_dir) / "export" / f"step_{step}"


def is_complete(cfg: Config) -> bool:
    """The chosen checkpoint is already exported (a model directory with its config.json)."""
    try:
        _, step = _checkpoint(cfg, Path(cfg.run_dir))
    except PipelineError:
        return False
    return (_output_dir(cfg, step) / "config.json").is_file()


def run(cfg: Config) -> int:
    run_dir = Path(cfg.run_dir)
    module, stage_cfg = _stage_of(run_dir)
    path, step = _checkpoint(cfg, run_dir)
    out = _output_dir(cfg, step)
    accelerator = make_accelerator(stage_cfg.train, run_dir, log=False)
    task, train = module.build_task(stage_cfg, accelerator, run_dir)
    model, optimizer = accelerator.prepare(task.model, build_optimizer(task.model, train))
    load_checkpoint(accelerator, model, optimizer, path)
    out.parent.mkdir(parents=True, exist_ok=True)
    task.export(accelerator, model, out)
    console.info(f"export: {path} (step {step}) -> {out}")
    return 0
