"""The baselines: the Hugging Face example recipes, written faithfully (not handicapped).

* :func:`mlm_dataset` + :class:`HFMlmTrainer` follow ``examples/pytorch/language-modeling/
  run_mlm_no_trainer.py``: ``load_dataset("text")`` -> ``map(tokenize, batched=True)`` ->
  ``map(group_texts, batched=True)`` into ``seq_len`` blocks, ``DataCollatorForLanguageModeling
  (mlm_probability=0.15)`` in a ``DataLoader(shuffle=True)``, ``AutoModelForMaskedLM.from_config``
  (default attention = SDPA), AdamW with the example's two weight-decay groups, a linear schedule,
  and the example's Accelerate loop (``accumulate`` / ``backward`` / ``step``; no clipping).
* :func:`glue_dataset` + :class:`HFClassifierTrainer` follow ``examples/pytorch/text-classification/
  run_glue_no_trainer.py``: ``tokenizer(..., padding=False, truncation=True)``, dynamic padding by
  ``DataCollatorWithPadding``, ``AutoModelForSequenceClassification``, the same optimizer/loop.

What is left out of both is what the benchmarks do not time: argument parsing, evaluation,
checkpointing, hub pushes.  The trainers are generators: ``next(trainer.steps())`` runs one
optimizer step, so the caller times steps exactly like it times the pipeline's loop.
Not run directly; used by ``bench.pretrain_throughput``, ``bench.shard_throughput`` and
``bench.finetune_throughput``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from datasets import Dataset, load_dataset
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    get_scheduler,
)


def mlm_dataset(
    tokenizer, text_file: Path, seq_len: int, num_proc: int | None = None, cache_dir: str | None = None
) -> Dataset:
    """run_mlm_no_trainer's preprocessing (not line_by_line): tokenize, concatenate, cut into blocks."""
    raw = load_dataset(
        "text", data_files={"train": str(text_file)}, keep_linebreaks=True, cache_dir=cache_dir
    )
    column_names = raw["train"].column_names

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc, remove_columns=column_names)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        if total_length >= seq_len:
            total_length = (total_length // seq_len) * seq_len
        return {
            k: [t[i : i + seq_len] for i in range(0, total_length, seq_len)] for k, t in concatenated.items()
        }

    return tokenized.map(group_texts, batched=True, num_proc=num_proc)["train"]


def glue_dataset(
    tokenizer, tsv_file: Path, text_column: str, label_column: str, max_length: int, limit: int = 0
) -> Dataset:
    """run_glue_no_trainer's preprocessing of a single-sentence task: no padding, truncation."""
    with open(tsv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    raw = Dataset.from_dict(
        {"sentence": [r[text_column] for r in rows], "label": [int(r[label_column]) for r in rows]}
    )

    def preprocess_function(examples):
        result = tokenizer(examples["sentence"], padding=False, max_length=max_length, truncation=True)
        result["labels"] = examples["label"]
        return result

    return raw.map(preprocess_function, batched=True, remove_columns=raw.column_names)


def fresh_accelerator(grad_accum: int, mixed_precision: str) -> Accelerator:
    """``Accelerator()`` as the examples create it.  (The reset only lets one benchmark process run
    several loops one after another; the examples create a single Accelerator.)"""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision)


class _ExampleLoop:
    """The loop body shared by run_mlm_no_trainer and run_glue_no_trainer."""

    def __init__(
        self,
        model,
        dataset: Dataset,
        collator,
        *,
        batch_size: int,
        grad_accum: int,
        lr: float,
        weight_decay: float,
        max_steps: int,
        mixed_precision: str,
        seed: int,
    ):
        torch.manual_seed(seed)
        self.accelerator = fresh_accelerator(grad_accum, mixed_precision)
        loader = DataLoader(dataset, shuffle=True, collate_fn=collator, batch_size=batch_size)
        no_decay = ["bias", "LayerNorm.weight"]
        groups = [
            {
                "params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
                "weight_decay": weight_decay,
            },
            {
                "params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
                "weight_decay": 0.0,
            },
        ]
        optimizer = torch.optim.AdamW(groups, lr=lr)
        scheduler = get_scheduler(
            "linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=max_steps * grad_accum
        )
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler
        )

    def steps(self) -> Iterator[torch.Tensor]:
        """Yield the (device) loss after every optimizer step, epoch after epoch."""
        acc, model = self.accelerator, self.model
        model.train()
        while True:
            for batch in self.loader:
                with acc.accumulate(model):
                    outputs = model(**batch)
                    loss = outputs.loss
                    acc.backward(loss)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                if acc.sync_gradients:
                    yield loss.detach()


class HFMlmTrainer(_ExampleLoop):
    """run_mlm_no_trainer: ``hf_config`` sets the model (BERT, ModernBERT, ... and its dims; vocab = the
    tokenizer's); ``mlm_probability`` is the example's ``--mlm_probability`` (default 0.15)."""

    def __init__(
        self,
        hf_config,
        tokenizer,
        dataset: Dataset,
        *,
        batch_size: int,
        grad_accum: int = 1,
        max_steps: int = 1000,
        mixed_precision: str = "no",
        lr: float = 5e-5,
        seed: int = 0,
        mlm_probability: float = 0.15,
    ):
        torch.manual_seed(seed)
        model = AutoModelForMaskedLM.from_config(hf_config)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability)
        super().__init__(
            model,
            dataset,
            collator,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            weight_decay=0.0,
            max_steps=max_steps,
            mixed_precision=mixed_precision,
            seed=seed,
        )


class HFClassifierTrainer(_ExampleLoop):
    """run_glue_no_trainer: dynamic padding per batch, fp32 unless ``mixed_precision`` says otherwise."""

    def __init__(
        self,
        hf_config,
        tokenizer,
        dataset: Dataset,
        *,
        batch_size: int,
        max_steps: int = 1000,
        mixed_precision: str = "no",
        lr: float = 2e-5,
        seed: int = 0,
    ):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(hf_config)
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)
        super().__init__(
            model,
            dataset,
            collator,
            batch_size=batch_size,
            grad_accum=1,
            lr=lr,
            weight_decay=0.0,
            max_steps=max_steps,
            mixed_precision=mixed_precision,
            seed=seed,
        )
