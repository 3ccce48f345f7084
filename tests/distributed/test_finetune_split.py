"""Fine-tuning (NER) under DDP with 2 processes x micro-batch 1 x grad_accum 2 against one process
with the same global batch of 4: the per-step loss and gradient norm agree within LOSS_RTOL.

Pretraining rows are packed to full length, so every sequence has the same number of masked
tokens and a loss normalised per process or per micro-batch would still look right there.  NER
examples have different numbers of labelled words, so the processes' and micro-batches' target
counts differ: this run is what fails if the loss is not normalised by the global count of the
step (the README's "the objective does not depend on how the batch is split").
"""

from __future__ import annotations

import math

import pytest

from tests.helpers.distributed import BACKENDS, run_launched_stage, run_stage, train_records
from tests.helpers.finetune import write_conll

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
LOSS_RTOL = 1e-5  # fp32: only the order of reductions differs


def _args(data, model, out, **train) -> list[str]:
    settings = {"max_steps": 6, "lr": 3e-3, "warmup_steps": 1, "log_every": 1, "eval_every": 0,
                "save_every": 0, "progress": False, "peak_tflops": 1.0, "seed": 0} | train  # fmt: skip
    return [
        "finetune",
        f"output_dir={out}",
        "task.type=ner",
        f"data.train={data}",
        f"data.validation={data}",
        f"model.init_from={model}",
        "model.dropout=0.0",
        "model.classifier_dropout=0.0",
        *(f"train.{key}={value}" for key, value in settings.items()),
    ]


def test_ner_loss_is_normalised_over_the_global_batch(single, workdir):
    data = write_conll(workdir / "ner.txt", "iob2", n=60)
    model = single["batch"] / "final"
    one, two = workdir / "ner-1proc", workdir / "ner-ddp"
    run_stage(_args(data, model, one, batch_size=4), workdir / "ner-1proc.log")
    run_launched_stage(
        BACKENDS["ddp"], _args(data, model, two, batch_size=1, grad_accum=2), workdir / "ner-ddp.log"
    )
    expected, got = train_records(one), train_records(two)
    assert sorted(got) == sorted(expected) == list(range(1, 7))
    for step, record in expected.items():
        for key in ("train/loss", "train/grad_norm"):
            assert math.isclose(got[step][key], record[key], rel_tol=LOSS_RTOL), (
                step,
                key,
                got[step][key],
                record[key],
            )
