"""The `train` config section shared by every training stage (pretrain, finetune).

Hardware, process count and sharding strategy are NOT here: they come from the `accelerate launch`
config alone.  This section holds what defines the optimisation, and ``precision``, whose default
``auto`` measures what this hardware runs fastest (an explicit launch value wins; see
``pipeline.train.precision``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from pipeline.config import REQUIRED, ConfigError, option


def global_batch_size(batch_size: int, grad_accum: int, processes: int) -> int:
    """Samples per optimizer step: ``batch_size`` per process and micro-batch, ``grad_accum``
    micro-batches, ``processes`` processes."""
    return batch_size * grad_accum * processes


@dataclass
class TrainConfig:
    max_steps: int = option(0, "optimizer steps to train for; 0 = derive from train.epochs")
    epochs: float = option(0.0, "passes over the training set, used when max_steps is 0 (finetune)")
    batch_size: int = option(
        REQUIRED, "micro-batch size per process; global batch = batch_size x grad_accum x processes"
    )
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step")
    lr: float = option(REQUIRED, "peak learning rate (AdamW)")
    weight_decay: float = option(
        0.01, "AdamW weight decay; never applied to biases, LayerNorm/RMSNorm weights or embeddings' norms"
    )
    betas: list[float] = option([0.9, 0.98], "AdamW betas")
    eps: float = option(1e-6, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this value (0 = no clipping)")
    schedule: Literal["linear", "cosine", "wsd", "constant"] = option(
        "linear", "learning-rate schedule after warmup, in optimizer steps"
    )
    warmup_steps: int = option(0, "linear warmup from 0 to lr over this many optimizer steps")
    warmup_ratio: float = option(0.0, "warmup as a fraction of max_steps (used when warmup_steps is 0)")
    decay_ratio: float = option(
        0.1, "wsd only: fraction of max_steps spent in the final linear decay to min_lr"
    )
    min_lr_ratio: float = option(0.0, "the schedule decays to lr x min_lr_ratio")
    layer_lr_decay: float = option(
        1.0,
        "layer-wise lr decay (fine-tuning a pretrained encoder): the head keeps lr, each encoder layer gets this factor of the lr of the layer above it, the embeddings the smallest (ELECTRA / DeBERTa); 1 = one lr for all",
    )
    seed: int = option(0, "seed for initialisation, data order and masking")
    eval_every: int = option(
        500, "evaluate on the validation split every N optimizer steps (0 = only at the end)"
    )
    eval_batches: int = option(
        0, "cap on validation micro-batches per process per evaluation (0 = the whole split)"
    )
    save_every: int = option(1000, "checkpoint every N optimizer steps (0 = only at the end)")
    keep_checkpoints: int = option(2, "keep this many newest checkpoints")
    resume: str = option(
        "auto", "'auto' = newest complete checkpoint in output_dir/checkpoints, 'never', or a checkpoint path"
    )
    stop_after: int = option(
        0,
        "end this invocation after N optimizer steps with a checkpoint, as a stop signal would (time-sliced jobs); 0 = run to max_steps",
    )
    log_every: int = option(10, "log train scalars every N optimizer steps")
    compile: bool = option(
        False,
        "torch.compile the model (in place: saved weights keep their plain names); a GPU setting - on a 2-core CPU it measured 0.9x eager",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto",
        "compute precision (bf16/fp16 = mixed precision, fp32 master weights); auto = bf16 where this hardware runs it faster (CUDA with native bf16; a CPU whose matmul probe at the model's sizes shows bf16 >= 1.3x fp32), else fp32. accelerate launch's mixed_precision sets it too; both set and different is an error",
    )
    peak_tflops: float = option(0.0, "per-device peak TFLOP/s for MFU; 0 = measure once with a matmul probe")
    prefetch: int = option(4, "micro-batches prepared ahead by a background thread")
    metric_for_best: str | None = option(
        None, "eval metric choosing the exported model, e.g. eval/accuracy (null = the last)"
    )
    greater_is_better: bool = option(True, "whether a larger metric_for_best is better (false for eval/loss)")
    on_nonfinite: Literal["skip", "stop"] = option(
        "stop", "a NaN/inf loss or gradient norm: skip that optimizer step, or stop"
    )
    progress: bool = option(True, "show a progress bar on the main process")

    def validate(self) -> None:
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "log_every": self.log_every}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {value}")
        if self.max_steps < 0 or self.epochs < 0:
            raise ConfigError("train.max_steps and train.epochs must be >= 0")
        if self.max_steps == 0 and self.epochs == 0:
            raise ConfigError("set train.max_steps (optimizer steps) or train.epochs (passes over the data)")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas needs two values, got {self.betas}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.decay_ratio <= 1:
            raise ConfigError("train.warmup_ratio must be in [0, 1) and train.decay_ratio in [0, 1]")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"train.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")

    def global_batch(self, processes: int) -> int:
        """Samples per optimizer step with ``processes`` processes."""
        return global_batch_size(self.batch_size, self.grad_accum, processes)


def resolve_max_steps(cfg: TrainConfig, num_samples: int, num_processes: int) -> TrainConfig:
    """``train.max_steps``, or ``train.epochs`` converted to optimizer steps for this global batch."""
    if cfg.max_steps > 0:
        return cfg
    steps = math.ceil(cfg.epochs * num_samples / cfg.global_batch(num_processes))
    return dataclasses.replace(cfg, max_steps=max(1, steps))
