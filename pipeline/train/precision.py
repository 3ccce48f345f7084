"""Which precision a training run computes in: ``train.precision`` and the launch's mixed precision.

Called by :func:`pipeline.train.make_accelerator` before it creates the Accelerator::

    choice = choose_precision(cfg.train.precision, matmul_dims=(hidden, ffn_width), num_processes=...)
    Accelerator(mixed_precision=choice.mixed_precision, ...)

Sources, strongest first:

* ``accelerate launch --mixed_precision X`` or the launch config's ``mixed_precision`` (``accelerate
  launch`` always exports one as ``ACCELERATE_MIXED_PRECISION``, ``no`` when neither says);
* ``train.precision`` = ``fp32`` | ``bf16`` | ``fp16``;
* ``train.precision=auto`` (the default) with no launcher value: bf16 where the hardware runs it
  faster - a CUDA device with native bf16, or a CPU where a short matmul probe at the model's sizes
  shows bf16 ahead of fp32 by :data:`BF16_MARGIN` - and fp32 otherwise.  CPUs differ: with AMX or
  AVX512-BF16 bf16 matmuls run 2-10x fp32, without them bf16 is emulated and several times slower.

A launcher value and an explicit ``train.precision`` that disagree are an error.  The probe runs
once per process and shape (cached); under several processes rank 0 decides and tells the others,
so all of them compute alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from pipeline.errors import PipelineError
from pipeline.train.throughput import sync

__all__ = ["BF16_MARGIN", "PrecisionChoice", "choose_precision", "matmul_probe"]

# bf16 must beat fp32 by this factor in the matmul probe to be chosen: mixed precision keeps norms,
# softmax and the optimizer in fp32 and adds casts, so a step gains less than its matmuls (measured on
# an AVX512-BF16 CPU: matmuls 2.3x, a BERT-mini step 1.5x); a near-tie is not worth the rounding.
BF16_MARGIN = 1.3
# accelerate's mixed_precision values <-> train.precision values
_LAUNCH_TO_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}
_PROBE_CACHE: dict[tuple, dict[str, float]] = {}


@dataclass
class PrecisionChoice:
    """What a run computes in and why (printed once, recorded in ``summary.json``)."""

    precision: str  # fp32 | bf16 | fp16 (| fp8 from a launcher)
    source: str  # "launch" | "train.precision" | "auto"
    reason: str
    probe: dict[str, float] = field(default_factory=dict)  # auto on CPU: matmul_probe's numbers

    @property
    def mixed_precision(self) -> str:
        """The value for ``Accelerator(mixed_precision=...)``."""
        return "no" if self.precision == "fp32" else self.precision

    def record(self) -> dict:
        return asdict(self)


def _probe_rows(hidden: int, width: int) -> int:
    """Rows of the probe's activations: about 0.5 GFLOP per repetition, 256..2048 rows (enough for
    steady-state matmul speed; the probe must stay a fraction of a second on a 2-core CPU)."""
    rows = int(0.5e9 / (6 * hidden * width)) // 64 * 64
    return min(max(rows, 256), 2048)


def matmul_probe(device: torch.device, hidden: int, width: int, seconds: float = 0.25) -> dict[str, float]:
    """One linear layer's training matmuls (y = x W, dx = dy W^T, dW = x^T dy) at ``hidden`` x
    ``width``, in fp32 and in bf16 (casting its fp32 weight every time, as autocast does).  Returns
    the best TFLOP/s of each dtype and ``bf16_speedup``: the median over back-to-back fp32/bf16 pairs
    of their time ratio, which a busy machine slows alike (on a shared 2-core box single reps vary
    10x; the pairs' median stays put).  At least 5 pairs, more while ``seconds`` last.  Cached per
    process."""
    rows = _probe_rows(hidden, width)
    key = (str(device), rows, hidden, width)
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, hidden, generator=gen).to(device)
    dy = torch.randn(rows, width, generator=gen).to(device)
    weight = torch.randn(hidden, width, generator=gen).to(device)
    inputs = {dtype: (x.to(dtype), dy.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}

    def rep(dtype: torch.dtype) -> float:
        xd, dyd = inputs[dtype]
        start = time.perf_counter()
        w = weight.to(dtype)
        _ = (xd @ w, dyd @ w.T, xd.T @ dyd)
        sync(device)
        return time.perf_counter() - start

    for dtype in inputs:  # warm-up: kernel selection, first-touch allocation
        rep(dtype)
    pairs: list[tuple[float, float]] = []
    deadline = time.perf_counter() + seconds
    while len(pairs) < 5 or (time.perf_counter() < deadline and len(pairs) < 21):
        pairs.append((rep(torch.float32), rep(torch.bfloat16)))
    flops = 6 * rows * hidden * width
    result = {
        "fp32": flops / min(p[0] for p in pairs) / 1e12,
        "bf16": flops / min(p[1] for p in pairs) / 1e12,
        "bf16_speedup": statistics.median(fp32 / bf16 for fp32, bf16 in pairs),
    }
    _PROBE_CACHE[key] = result
    return result


def _auto(device: torch.device, matmul_dims: tuple[int, int]) -> PrecisionChoice:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return PrecisionChoice("bf16", "auto", f"{torch.cuda.get_device_name(device)} has native bf16")
        return PrecisionChoice("fp32", "auto", f"{torch.cuda.get_device_name(device)} has no native bf16")
    if device.type != "cpu":
        return PrecisionChoice("fp32", "auto", f"no bf16 probe for device type {device.type}")
    probe = matmul_probe(device, *matmul_dims)
    speedup = probe["bf16_speedup"]
    measured = (
        f"a matmul probe at this model's sizes ({matmul_dims[0]} x {matmul_dims[1]}) ran bf16 at "
        f"{speedup:.2f}x fp32 (best {probe['bf16']:.3f} vs {probe['fp32']:.3f} TFLOP/s)"
    )
    if speedup >= BF16_MARGIN:
        return PrecisionChoice("bf16", "auto", measured, probe)
    return PrecisionChoice("fp32", "auto", f"{measured}; bf16 needs >= {BF16_MARGIN}x", probe)


def _broadcast(choice: PrecisionChoice, num_processes: int) -> PrecisionChoice:
    """Rank 0's choice on every process (each probe sees its own noise; all must compute alike)."""
    if num_processes <= 1:
        return choice
    from accelerate.utils import broadcast_object_list

    box = [choice]
    broadcast_object_list(box, from_process=0)
    return box[0]


def choose_precision(
    configured: str,
    launch: str | None,
    *,
    device: torch.device,
    matmul_dims: tuple[int, int],
    num_processes: int = 1,
) -> PrecisionChoice:
    """The run's precision from ``train.precision`` (``configured``), the launcher's mixed precision
    (``launch``: ``$ACCELERATE_MIXED_PRECISION`` or None) and, for ``auto``, the hardware.
    ``matmul_dims`` = (hidden size, feed-forward width) of the model, for the CPU probe."""
    if launch is not None:
        if launch not in _LAUNCH_TO_PRECISION:
            raise PipelineError(f"unknown mixed precision {launch!r} from accelerate launch")
        launched = _LAUNCH_TO_PRECISION[launch]
        if configured not in ("auto", launched):
            raise PipelineError(
                f"accelerate launch sets mixed precision {launch!r} ({launched}) but train.precision={configured}: "
                "make them agree, or leave one unset (train.precision=auto, or no --mixed_precision / "
                "mixed_precision in the launch config)"
            )
        return PrecisionChoice(launched, "launch", f"accelerate launch mixed_precision={launch}")
    if configured != "auto":
        return PrecisionChoice(configured, "train.precision", f"train.precision={configured}")
    return _broadcast(_auto(device, matmul_dims), num_processes)
