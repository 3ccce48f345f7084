"""Fine-tune a pretrained encoder: sequence classification / regression (single or pair) and NER.

Run:
    pipeline finetune --config configs/finetune/sst2.yaml model.init_from=runs/pretrain/final
    accelerate launch --config_file launch/accelerate/ddp.yaml -m pipeline finetune --config configs/finetune/mrpc.yaml

Trains on the same loop as pretraining (``pipeline.train.fit``) with dynamic padding; evaluates on
``data.validation`` every ``train.eval_every`` steps; exports the best model by
``train.metric_for_best`` to ``<output_dir>/final/`` and writes ``eval_results.json`` (its metrics)
and ``predictions.tsv`` (``data.test`` predicted by that model).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from accelerate.utils import set_seed

from pipeline import console
from pipeline.config import REQUIRED, option, section
from pipeline.finetune import (
    ClassificationDataset,
    FinetuneDataConfig,
    FinetuneModel,
    FinetuneModelConfig,
    TokenClassificationDataset,
    build_model,
    collate_dynamic,
    conll_prediction_lines,
    count_targets,
    eval_scalars,
    load_ner_splits,
    load_splits,
    load_tokenizer,
    predict,
    split_metrics,
    word_predictions,
)
from pipeline.io import atomic_open, write_json, write_text
from pipeline.train import (
    GlobalBatchPlan,
    TrainConfig,
    TrainTask,
    export_model,
    resolve_max_steps,
    run_training_stage,
)

DEFAULT_METRIC = {"classification": "eval/accuracy", "regression": "eval/pearson", "ner": "eval/f1"}


@dataclass
class TaskConfig:
    type: Literal["classification", "regression", "ner"] = option(
        REQUIRED, "classification | regression | ner"
    )


@dataclass
class Config:
    output_dir: str = option(
        REQUIRED, "run directory: final/, eval_results.json, predictions.tsv, checkpoints/, tensorboard/"
    )
    task: TaskConfig = section(TaskConfig, "what to learn")
    data: FinetuneDataConfig = section(FinetuneDataConfig, "labelled files")
    model: FinetuneModelConfig = section(FinetuneModelConfig, "starting point")
    train: TrainConfig = section(TrainConfig, "optimisation, evaluation, checkpointing")


def _datasets(cfg: Config, tokenizer):
    """(train, validation, test | None, label_names) as tokenized datasets."""
    if cfg.task.type == "ner":
        splits = load_ner_splits(cfg.data)
        label2id = {t: i for i, t in enumerate(splits.tag_names)}
        c = cfg.data.conll
        make = partial(
            TokenClassificationDataset,
            tokenizer=tokenizer,
            label2id=label2id,
            max_length=cfg.data.max_length,
            stride=c.stride,
            label_all_subtokens=c.label_all_subtokens,
        )
        sets = [make(s) if s else None for s in (splits.train, splits.validation, splits.test)]
        return (*sets, splits.tag_names)
    splits = load_splits(cfg.data, cfg.task.type)
    make = partial(ClassificationDataset, tokenizer=tokenizer, max_length=cfg.data.max_length)
    sets = [make(s) if s else None for s in (splits.train, splits.validation, splits.test)]
    return (*sets, splits.label_names)


def _train_batch_fn(dataset, plan: GlobalBatchPlan, pad_id: int):
    def make_batch(step: int, micro: int) -> dict:
        indices = plan.samples(plan.positions(step, micro))
        batch = collate_dynamic([dataset[int(i)] for i in indices], pad_id)
        batch["num_targets"] = count_targets(batch)
        batch["num_tokens"] = int(batch["attention_mask"].sum())
        return batch

    return make_batch


def _write_predictions(
    path: Path, task: str, dataset, predictions: list[np.ndarray], label_names: list[str]
) -> None:
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


def build_task(cfg: Config, accelerator, output_dir: Path) -> tuple[TrainTask, GlobalBatchPlan]:
    """Data, model and callbacks for the loop; ``cfg.train`` gets its resolved step count and metric."""
    tokenizer = load_tokenizer(cfg.model)
    train_set, val_set, test_set, label_names = _datasets(cfg, tokenizer)
    task_type, pad_id = cfg.task.type, tokenizer.pad_token_id
    train_cfg = resolve_max_steps(cfg.train, len(train_set), accelerator.num_processes)
    if train_cfg.metric_for_best is None:
        train_cfg = replace(train_cfg, metric_for_best=DEFAULT_METRIC[task_type], greater_is_better=True)
    cfg.train = train_cfg
    set_seed(train_cfg.seed)  # head initialisation and dropout
    hf_model = build_model(cfg.model, task_type, label_names, tokenizer)
    plan = GlobalBatchPlan(
        len(train_set),
        train_cfg.batch_size,
        train_cfg.grad_accum,
        accelerator.num_processes,
        accelerator.process_index,
        train_cfg.seed,
        lengths=np.asarray(train_set.lengths()) if cfg.data.group_by_length else None,
    )
    eval_bs = train_cfg.batch_size * 2

    def evaluate(model) -> dict[str, float]:
        preds, loss_sum, count = predict(accelerator, model, val_set, eval_bs, pad_id)
        return eval_scalars(split_metrics(task_type, val_set, preds, label_names), loss_sum, count)

    def on_new_best(model, metrics: dict[str, float], step: int) -> None:
        test_preds = (
            predict(accelerator, model, test_set, eval_bs, pad_id)[0] if test_set is not None else None
        )
        if accelerator.is_main_process:
            write_json(output_dir / "eval_results.json", {"step": step, **metrics}, default=str)
            if test_preds is not None:
                _write_predictions(
                    output_dir / "predictions.tsv", task_type, test_set, test_preds, label_names
                )

    tokenizer_dir = Path(cfg.model.tokenizer or cfg.model.init_from)
    task = TrainTask(
        model=FinetuneModel(hf_model, task_type),
        make_batch=_train_batch_fn(train_set, plan, pad_id),
        export=lambda acc, model, path: export_model(acc, model, hf_model, path, tokenizer_dir),
        evaluate=evaluate,
        on_new_best=on_new_best,
        # 6 x matmul parameters (embedding lookups are not matmuls); attention scores are left out
        flops_per_token=6
        * sum(p.numel() for n, p in hf_model.named_parameters() if p.dim() > 1 and "embed" not in n),
    )
    return task, plan


def run(cfg: Config) -> int:
    return run_training_stage(cfg, build_task, on_complete=_print_results)


def _print_results(output_dir: Path) -> None:
    import json

    results = json.loads((output_dir / "eval_results.json").read_text())
    shown = {k: round(v, 4) for k, v in results.items() if isinstance(v, float) and k.count("/") == 1}
    console.info(f"best validation metrics: {shown}")
