"""Masked-language-model pretraining from scratch on a shard set (BERT or ModernBERT).

Run:
    pipeline pretrain --config configs/pretrain/tiny_cpu.yaml
    accelerate launch --config_file launch/accelerate/ddp.yaml -m pipeline pretrain --config configs/pretrain/bert_base.yaml

Reads ``data.shards`` (the output of ``pipeline shard``, which bundles its tokenizer), builds the
model from ``model.*``, masks on the fly (``mlm.*``), trains with the shared loop (``train.*``) and
exports ``<output_dir>/final/`` for ``AutoModelForMaskedLM`` / ``pipeline("fill-mask")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate.utils import set_seed
from transformers import AutoTokenizer

from pipeline.config import REQUIRED, option, section
from pipeline.errors import PipelineError
from pipeline.mlm import (
    Masker,
    MaskingConfig,
    ModelConfig,
    SparseMLM,
    build_mlm_model,
    mlm_evaluator,
    mlm_flops_per_token,
    train_batch_fn,
    unwrap_mlm,
)
from pipeline.shards import ShardReader
from pipeline.text import word_continuation_table
from pipeline.train import (
    GlobalBatchPlan,
    TrainConfig,
    TrainTask,
    export_model,
    resolve_max_steps,
    run_training_stage,
)


@dataclass
class DataConfig:
    shards: str = option(REQUIRED, "shard set directory written by `pipeline shard` (holds manifest.json)")
    verify: bool = option(False, "check every shard's sha256 before training (slow on big sets)")
    eval_batch_size: int = option(0, "validation micro-batch size per process (0 = train.batch_size)")


@dataclass
class Config:
    output_dir: str = option(
        REQUIRED, "run directory: config.yaml, checkpoints/, final/, tensorboard/, metrics.jsonl"
    )
    data: DataConfig = section(DataConfig, "input shards")
    model: ModelConfig = section(ModelConfig, "architecture and size")
    mlm: MaskingConfig = section(MaskingConfig, "dynamic masking")
    train: TrainConfig = section(TrainConfig, "optimisation, evaluation, checkpointing")


def load_tokenizer(reader: ShardReader):
    try:
        tokenizer = AutoTokenizer.from_pretrained(reader.tokenizer_dir)
    except (OSError, ValueError) as e:
        raise PipelineError(
            f"cannot load the shard set's tokenizer from {reader.tokenizer_dir}: {e}"
        ) from None
    if len(tokenizer) != reader.vocab_size:
        raise PipelineError(
            f"vocab size mismatch: tokenizer {reader.tokenizer_dir} has {len(tokenizer)} tokens but the shards "
            f"in {reader.root} were written with {reader.vocab_size}"
        )
    return tokenizer


def build_task(cfg: Config, accelerator, output_dir: Path | None = None) -> tuple[TrainTask, GlobalBatchPlan]:
    train = ShardReader(cfg.data.shards, "train", verify=cfg.data.verify)
    tokenizer = load_tokenizer(train)
    set_seed(cfg.train.seed)  # initialisation and dropout
    hf_model = build_mlm_model(
        cfg.model, vocab_size=train.vocab_size, special_ids=train.special_ids, seq_len=train.seq_len
    )
    train.check_compatible(
        vocab_size=hf_model.config.vocab_size, max_positions=cfg.model.max_position_embeddings
    )
    ids = train.special_ids
    masker = Masker(
        cfg.mlm,
        seq_len=train.seq_len,
        vocab_size=train.vocab_size,
        seed=cfg.train.seed,
        pad_id=ids["pad_id"],
        special_ids=[v for v in ids.values() if v is not None],
        mask_id=ids["mask_id"],
        continuation=word_continuation_table(tokenizer) if cfg.mlm.whole_word else None,
    )
    t = cfg.train = resolve_max_steps(cfg.train, len(train), accelerator.num_processes)
    plan = GlobalBatchPlan(
        len(train), t.batch_size, t.grad_accum, accelerator.num_processes, accelerator.process_index, t.seed
    )
    evaluate = None
    validation = ShardReader(cfg.data.shards, "validation", verify=cfg.data.verify)
    if len(validation) > 0:
        evaluate = mlm_evaluator(
            accelerator, validation, masker, cfg.data.eval_batch_size or t.batch_size, t.eval_batches
        )

    def export(acc, model, path: Path) -> None:
        export_model(acc, model, unwrap_mlm(acc.unwrap_model(model)), path, train.tokenizer_dir)

    task = TrainTask(
        model=SparseMLM(hf_model),
        make_batch=train_batch_fn(train, masker, plan),
        export=export,
        evaluate=evaluate,
        flops_per_token=mlm_flops_per_token(
            hf_model.config, train.seq_len, cfg.mlm.probability * train.seq_len
        ),
    )
    return task, plan


def run(cfg: Config) -> int:
    return run_training_stage(cfg, build_task)
