"""The fine-tuning task for the shared loop: datasets, model head, evaluation and outputs.

Called by the finetune stage (``pipeline finetune``) with its config sections::

    task, train = build_finetune_task("classification", cfg.data, cfg.model, cfg.train, accelerator, out)

``train`` is the ``train`` section as resolved for this run (``train.epochs`` -> optimizer steps for
the global batch; the task's default ``metric_for_best``).  Every evaluation that improves the
best metric writes ``eval_results.json`` (its metrics) and ``predictions.tsv`` (``data.test``
predicted by that model) into ``output_dir``.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed

from pipeline import console
from pipeline.finetune.conll import conll_prediction_lines, load_ner_splits
from pipeline.finetune.data import FinetuneDataConfig, load_splits
from pipeline.finetune.eval import eval_scalars, predict, split_metrics
from pipeline.finetune.features import (
    ClassificationDataset,
    TokenClassificationDataset,
    collate_dynamic,
    word_predictions,
)
from pipeline.finetune.model import (
    FinetuneModel,
    FinetuneModelConfig,
    build_model,
    count_targets,
    load_tokenizer,
)
from pipeline.finetune.packing import can_pack, collate_packed
from pipeline.finetune.task import DEFAULT_METRIC, TaskType
from pipeline.io import atomic_open, write_json, write_text
from pipeline.train import (
    GlobalBatchPlan,
    TrainConfig,
    TrainTask,
    export_model,
    resolve_max_steps,
    run_completed,
)

__all__ = [
    "PREDICTIONS_FILE",
    "RESULTS_FILE",
    "build_finetune_task",
    "finetune_complete",
    "write_predictions",
]

RESULTS_FILE = "eval_results.json"
PREDICTIONS_FILE = "predictions.tsv"


def finetune_complete(output_dir: str | Path) -> bool:
    """A finished fine-tuning run: its last invocation completed and the best model's metrics are written."""
    return run_completed(output_dir) and (Path(output_dir) / RESULTS_FILE).is_file()


def _datasets(task_type: TaskType, data: FinetuneDataConfig, tokenizer):
    """(train, validation, test | None, label_names) as tokenized datasets."""
    if task_type == "ner":
        splits = load_ner_splits(data)
        make = partial(
            TokenClassificationDataset,
            tokenizer=tokenizer,
            label2id={t: i for i, t in enumerate(splits.tag_names)},
            max_length=data.max_length,
            stride=data.conll.stride,
            label_all_subtokens=data.conll.label_all_subtokens,
        )
        sets = [make(s) if s else None for s in (splits.train, splits.validation, splits.test)]
        return (*sets, splits.tag_names)
    splits = load_splits(data, task_type)
    make = partial(ClassificationDataset, tokenizer=tokenizer, max_length=data.max_length)
    sets = [make(s) if s else None for s in (splits.train, splits.validation, splits.test)]
    return (*sets, splits.label_names)


def _train_batch_fn(dataset, plan: GlobalBatchPlan, pad_id: int, pack_length: int | None):
    """``make_batch(step, micro)``: the plan's examples, packed into rows of ``pack_length`` tokens
    (``pipeline.finetune.packing``) or, with None, padded to the longest of them."""

    def make_batch(step: int, micro: int) -> dict:
        features = [dataset[int(i)] for i in plan.samples(plan.positions(step, micro))]
        if pack_length is None:
            batch = collate_dynamic(features, pad_id)
        else:
            batch = collate_packed(features, pad_id, pack_length)
        batch["num_targets"] = count_targets(batch)
        batch["num_tokens"] = sum(len(f["input_ids"]) for f in features)
        return batch

    return make_batch


def _pack_length(data: FinetuneDataConfig, hf_model) -> int | None:
    """Row length of packed training batches, or None (padded) when off or the model cannot pack."""
    if not data.packing:
        return None
    if not can_pack(hf_model):
        console.info(
            f"data.packing: {type(hf_model).__name__} with {hf_model.config._attn_implementation} attention "
            "is not supported (BERT / ModernBERT with sdpa or eager are); training on padded batches"
        )
        return None
    return data.max_length


def write_predictions(
    path: Path, task: TaskType, dataset, predictions: list[np.ndarray], label_names: list[str]
) -> None:
    """``predictions.tsv``: CoNLL lines for NER, else ``index text text_pair prediction`` rows."""
    if task == "ner":
        tags = word_predictions(dataset, predictions, label_names)
        write_text(path, "\n".join(conll_prediction_lines(dataset.sentences, tags)) + "\n")
        return
    with atomic_open(path, newline="") as f:
        out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        out.writerow(["index", "text", "text_pair", "prediction"])
        for example, pred in zip(dataset.examples, predictions):
            label = f"{float(pred):.6g}" if task == "regression" else label_names[int(pred)]
            out.writerow([example.index, example.text, example.text_pair or "", label])


class _Evaluation:
    """The loop's ``evaluate`` (validation metrics) and ``on_new_best`` (results + test predictions)."""

    def __init__(self, accelerator, task_type: TaskType, sets, label_names, batch_size, pad_id, out: Path):
        self.acc, self.task_type, self.label_names, self.out = accelerator, task_type, label_names, out
        self.validation, self.test = sets
        self.predict = partial(predict, accelerator, batch_size=batch_size, pad_id=pad_id)

    def evaluate(self, model) -> dict[str, float]:
        preds, loss_sum, count = self.predict(model, self.validation)
        metrics = split_metrics(self.task_type, self.validation, preds, self.label_names)
        return eval_scalars(metrics, loss_sum, count)

    def on_new_best(self, model, metrics: dict[str, float], step: int) -> None:
        test_preds = self.predict(model, self.test)[0] if self.test is not None else None
        if self.acc.is_main_process:
            write_json(self.out / RESULTS_FILE, {"step": step, **metrics}, default=str)
            if test_preds is not None:
                write_predictions(
                    self.out / PREDICTIONS_FILE, self.task_type, self.test, test_preds, self.label_names
                )


def _resolve_train(train: TrainConfig, task_type: TaskType, num_samples: int, processes: int) -> TrainConfig:
    """Steps from ``train.epochs`` for this global batch; the task's default best metric."""
    train = resolve_max_steps(train, num_samples, processes)
    if train.metric_for_best is None:
        train = replace(train, metric_for_best=DEFAULT_METRIC[task_type], greater_is_better=True)
    return train


def build_finetune_task(
    task_type: TaskType,
    data: FinetuneDataConfig,
    model: FinetuneModelConfig,
    train: TrainConfig,
    accelerator,
    output_dir: Path,
) -> tuple[TrainTask, TrainConfig]:
    """Data, model and callbacks for the loop, and the ``train`` section resolved for this run."""
    tokenizer = load_tokenizer(model)
    train_set, val_set, test_set, label_names = _datasets(task_type, data, tokenizer)
    train = _resolve_train(train, task_type, len(train_set), accelerator.num_processes)
    set_seed(train.seed)  # head initialisation and dropout
    hf_model = build_model(model, task_type, label_names, tokenizer)
    lengths = np.asarray(train_set.lengths()) if data.group_by_length else None
    plan = GlobalBatchPlan(
        len(train_set),
        train.batch_size,
        train.grad_accum,
        accelerator.num_processes,
        accelerator.process_index,
        train.seed,
        lengths=lengths,
    )
    pad_id = tokenizer.pad_token_id
    evaluation = _Evaluation(
        accelerator, task_type, (val_set, test_set), label_names, train.batch_size * 2, pad_id, output_dir
    )
    tokenizer_dir = Path(model.tokenizer_source()[1])
    task = TrainTask(
        model=FinetuneModel(hf_model, task_type),
        make_batch=_train_batch_fn(train_set, plan, pad_id, _pack_length(data, hf_model)),
        export=lambda acc, prepared, path: export_model(acc, prepared, hf_model, path, tokenizer_dir),
        evaluate=evaluation.evaluate,
        on_new_best=evaluation.on_new_best,
        # 6 x matmul parameters (embedding lookups are not matmuls); attention scores are left out
        flops_per_token=6
        * sum(p.numel() for n, p in hf_model.named_parameters() if p.dim() > 1 and "embed" not in n),
        epoch_of=plan.epoch_of,
    )
    return task, train
