"""Throughput and model FLOPs utilisation (MFU).

MFU = (training FLOPs per token x tokens per second) / (peak FLOP/s per device x devices).
FLOPs per token come from the architecture (see ``pipeline.mlm.flops.mlm_flops_per_token`` for the
formula); the peak is either configured (``train.peak_tflops``) or measured once by a short
square-matmul probe in the dtype the run computes in (bf16/fp16 under mixed precision, else fp32).
"""

from __future__ import annotations

import time

import torch

_PROBE_CACHE: dict[tuple[str, str], float] = {}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU, whose ops are synchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Best-of matmul FLOP/s on ``device`` in ``dtype`` (cached per process)."""
    key = (str(device), str(dtype))
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    n = 4096 if device.type == "cuda" else 1024
    # its own generator: the probe runs once per process, so drawing from the global RNG would make
    # a run's dropout masks depend on whether another stage ran before it in the same process
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    for _ in range(3):  # warm-up (kernel selection, AMX tile config)
        a @ b
    sync(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        reps = 10
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    _PROBE_CACHE[key] = best
    return best


def compute_dtype(mixed_precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


class ThroughputMeter:
    """Tokens/s and MFU over the interval since the last ``read()``; cheap to update every step."""

    def __init__(self, flops_per_token: float, peak_flops_total: float):
        self.flops_per_token = flops_per_token
        self.peak = peak_flops_total
        self.tokens = 0
        self.total_tokens = 0
        self.start = time.perf_counter()

    def add(self, tokens: int) -> None:
        self.tokens += tokens
        self.total_tokens += tokens

    def read(self) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        tps = self.tokens / elapsed
        self.tokens, self.start = 0, now
        mfu = tps * self.flops_per_token / self.peak if self.peak > 0 else 0.0
        return {"tokens_per_sec": tps, "mfu": mfu}
