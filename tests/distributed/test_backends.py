"""`pipeline pretrain` under DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 with 2 CPU processes, launched
with the shipped launch configs, against single-process runs with the same global batch.

For each backend (runs shared through the session fixtures in ``conftest.py``), 2 processes each
taking micro-batches of 1 sequence with grad_accum 2 (so data parallelism AND each backend's own
accumulation path - DDP/FSDP no_sync, DeepSpeed's accumulation boundary - are exercised):
  (0) the backend is what the launch config asks for, as each process saw it after ``prepare``
      (DDP replicas; FSDP2 DTensors sharded in halves; a DeepSpeed engine with the ZeRO stage, its
      optimizer state / parameters partitioned) and as the checkpoint's files show - so a backend
      that silently degrades to DDP fails here, not only in memory use;
  (a) the per-step train loss, gradient norm and LR over 8 steps equal the single-process runs
      with the same global batch of 4 - 1 process x batch 4, and 1 process x batch 2 x grad_accum 2
      - within a relative LOSS_RTOL (fp32: only the order of floating-point reductions differs);
  (b) stopping after 4 steps (checkpoint + exit) and resuming to 8 resumes from step 4 (its log
      line, summary.json's steps_this_run, no checkpoint skipped) and gives bit-identical per-step
      losses, gradient norms and final weights to the uninterrupted 2-process run;
  (c) ``final/`` loads with AutoModelForMaskedLM alone (the same weight names as a single-process
      export, none missing: gathered from the shards), gives the single-process model's logits
      within LOGITS_ATOL, and fill-mask runs.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.distributed.conftest import STEPS
from tests.helpers.distributed import (
    assert_resumed,
    backend_reports,
    final_logits,
    final_weights,
    train_records,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LOSS_RTOL = 1e-5  # observed <= 2e-7 (loss), 6e-7 (grad norm): fp32 rounding of reordered sums
LOGITS_ATOL = 1e-5  # observed <= 4e-7 (real-vocab logits are O(1-10))


def _numel(shape: list[int]) -> int:
    return math.prod(shape)


def _files(checkpoint) -> set[str]:
    return {str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file()}


def _ddp(reports, checkpoint) -> None:
    for report in reports:
        assert report["wrapper"] == "DistributedDataParallel", report["wrapper"]
        for name, p in report["params"].items():
            assert "placements" not in p and p["local_numel"] == _numel(p["shape"]), name  # full replicas
    assert {"model.safetensors", "optimizer.bin"} <= _files(checkpoint)


def _fsdp2(reports, checkpoint) -> None:
    assert all(r["distributed_type"] == "FSDP" and r["wrapper"].startswith("FSDP") for r in reports), reports[
        0
    ]
    for name, p in reports[0]["params"].items():
        local = [r["params"][name]["local_numel"] for r in reports]
        assert all(r["params"][name].get("placements") == ["S(0)"] for r in reports), (
            name
        )  # DTensor, dim-0 shards
        rows = p["shape"][0]
        assert sum(local) == _numel(p["shape"]), (name, local)  # the two shards partition the parameter
        assert max(local) == math.ceil(rows / 2) * (_numel(p["shape"]) // rows), (name, local)  # half each
    files = _files(checkpoint)
    assert {"pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp"} <= files, files
    assert {"optimizer_0/__0_0.distcp", "optimizer_0/__1_0.distcp"} <= files, files
    assert "model.safetensors" not in files and "optimizer.bin" not in files


def _zero(stage: int):
    def check(reports, checkpoint) -> None:
        assert all(r["wrapper"] == "DeepSpeedEngine" and r["zero_stage"] == stage for r in reports), reports[
            0
        ]
        params = reports[0]["params"]
        total = sum(_numel(p["shape"]) for p in params.values())
        if stage == 2:  # parameters replicated, fp32 master weights + Adam state in halves
            assert all(p["local_numel"] == _numel(p["shape"]) for p in params.values())
            parts = [r["optimizer_partition_numel"] for r in reports]
            assert sum(parts) >= total and max(parts) <= 0.51 * total, (parts, total)
        else:  # every parameter partitioned: each process holds half of it
            for name, p in params.items():
                local = [r["params"][name]["local_numel"] for r in reports]
                assert max(local) == math.ceil(_numel(p["shape"]) / 2) and sum(local) >= _numel(p["shape"]), (
                    name
                )
        files = _files(checkpoint)
        kind = "model" if stage == 3 else "optim"
        assert {f"pytorch_model/zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1)} <= files, files
        assert {f"pytorch_model/zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files, files

    return check


EXPECTED_BACKEND = {"ddp": _ddp, "fsdp2": _fsdp2, "zero2": _zero(2), "zero3": _zero(3)}


def test_backend_is_what_the_launch_config_asks_for(launched):
    reports = backend_reports(launched["full"])
    assert [r["rank"] for r in reports] == [0, 1] and all(r["processes"] == 2 for r in reports)
    EXPECTED_BACKEND[launched["name"]](reports, launched["full"] / "checkpoints" / f"step_{STEPS // 2}")


def _probe_ids(shards) -> torch.Tensor:
    """Two validation sequences as model input (same for every run)."""
    from pipeline.shards import ShardReader

    return torch.from_numpy(ShardReader(shards, "validation").take([0, 1]))


def test_single_process_references_agree(single):
    accum, batch = train_records(single["accum"]), train_records(single["batch"])
    assert sorted(batch) == list(range(1, STEPS + 1))
    for step in batch:
        for key in ("train/loss", "train/grad_norm"):
            assert math.isclose(accum[step][key], batch[step][key], rel_tol=LOSS_RTOL), (step, key)


def test_loss_curve_matches_single_process(launched, single):
    runs = train_records(launched["full"])
    assert sorted(runs) == list(range(1, STEPS + 1))
    for ref_name in ("batch", "accum"):
        reference = train_records(single[ref_name])
        for step, record in runs.items():
            ref = reference[step]
            assert record["train/lr"] == ref["train/lr"], (launched["name"], ref_name, step)
            for key in ("train/loss", "train/grad_norm"):
                assert math.isclose(record[key], ref[key], rel_tol=LOSS_RTOL), (
                    f"{launched['name']} vs {ref_name} at step {step}: {key} {record[key]} != {ref[key]}"
                )


def test_resume_is_bit_identical(launched):
    assert_resumed(launched["resumed"], STEPS // 2, STEPS)
    full, resumed = train_records(launched["full"]), train_records(launched["resumed"])
    assert sorted(resumed) == sorted(full)
    for step in full:
        for key in ("train/loss", "train/grad_norm", "train/lr"):
            assert resumed[step][key] == full[step][key], (launched["name"], step, key)
    weights_full, weights_resumed = final_weights(launched["full"]), final_weights(launched["resumed"])
    assert weights_full.keys() == weights_resumed.keys()
    for key, value in weights_full.items():
        assert torch.equal(value, weights_resumed[key]), (launched["name"], key)


def test_export_is_full_model_with_single_process_logits(launched, single, shards):
    ids = _probe_ids(shards)
    reference = final_logits(single["batch"], ids)
    for run in ("full", "resumed"):
        assert (
            final_weights(launched[run]).keys() == final_weights(single["batch"]).keys()
        )  # tied copies dropped
        logits = final_logits(launched[run], ids)
        assert logits.shape == reference.shape
        diff = (logits - reference).abs().max().item()
        assert diff <= LOGITS_ATOL, f"{launched['name']} {run}: logits differ by {diff}"


def test_fill_mask_runs_on_export(launched):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(launched["resumed"] / "final"), device="cpu")
    predictions = fill(f"ka lo {fill.tokenizer.mask_token} ne .")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)
