"""The MLM pretraining task for the shared loop: shards -> masked batches -> SparseMLM, and export.

Called by the pretrain stage (``pipeline pretrain``) with its config sections::

    task, train = build_mlm_task(cfg.data, cfg.model, cfg.mlm, cfg.train, accelerator)

The model is built from ``model`` for the shard set's bundled tokenizer; ``train`` comes back
resolved for this run (``train.epochs`` -> optimizer steps for the global batch).  ``final/`` is a
standard ``AutoModelForMaskedLM`` directory with the shard set's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import set_seed

from pipeline import console
from pipeline.mlm.data import MlmDataConfig, mlm_evaluator, train_batch_fn
from pipeline.mlm.flops import mlm_flops_per_token
from pipeline.mlm.masking import Masker, MaskingConfig
from pipeline.mlm.models import ModelConfig, SparseMLM, build_mlm_model, unwrap_mlm
from pipeline.shards import ShardReader, token_statistics
from pipeline.text import word_continuation_table
from pipeline.train import GlobalBatchPlan, TrainConfig, TrainTask, export_model, resolve_max_steps

__all__ = ["build_mlm_task"]


def _masker(masking: MaskingConfig, reader: ShardReader, tokenizer, seed: int) -> Masker:
    """Dynamic masking for the shard set's sequences and tokenizer."""
    ids = reader.special_ids
    continuation = word_continuation_table(tokenizer) if masking.whole_word else None
    return Masker(
        masking,
        seq_len=reader.seq_len,
        vocab_size=reader.vocab_size,
        seed=seed,
        pad_id=ids["pad_id"],
        special_ids=[v for v in ids.values() if v is not None],
        mask_id=ids["mask_id"],
        continuation=continuation,
    )


def build_mlm_task(
    data: MlmDataConfig, model: ModelConfig, masking: MaskingConfig, train: TrainConfig, accelerator
) -> tuple[TrainTask, TrainConfig]:
    """Data, model and evaluation for the loop, and the ``train`` section resolved for this run."""
    reader = ShardReader(data.shards, "train", verify=data.verify)
    tokenizer = reader.load_tokenizer()  # must load and match the shards' vocabulary
    set_seed(train.seed)  # initialisation and dropout
    hf_model = build_mlm_model(
        model, vocab_size=reader.vocab_size, special_ids=reader.special_ids, seq_len=reader.seq_len
    )
    reader.check_compatible(
        vocab_size=hf_model.config.vocab_size, max_positions=model.max_position_embeddings
    )
    masker = _masker(masking, reader, tokenizer, train.seed)
    train = resolve_max_steps(train, len(reader), accelerator.num_processes)
    plan = GlobalBatchPlan(
        len(reader),
        train.batch_size,
        train.grad_accum,
        accelerator.num_processes,
        accelerator.process_index,
        train.seed,
    )
    facts = _data_facts(data.shards)
    evaluate = None
    validation = ShardReader(data.shards, "validation", verify=data.verify)
    if len(validation) > 0:
        eval_batch_size = data.eval_batch_size or train.batch_size
        evaluate = mlm_evaluator(
            accelerator,
            validation,
            masker,
            eval_batch_size,
            train.eval_batches,
            facts["data/unigram_entropy"],
        )

    def export(acc, prepared, path: Path) -> None:
        export_model(acc, prepared, unwrap_mlm(acc.unwrap_model(prepared)), path, reader.tokenizer_dir)

    task = TrainTask(
        model=SparseMLM(hf_model, document_mask=masking.document_mask),
        make_batch=train_batch_fn(reader, masker, plan),
        export=export,
        evaluate=evaluate,
        flops_per_token=mlm_flops_per_token(
            hf_model.config, reader.seq_len, masking.probability * reader.seq_len
        ),
        epoch_of=plan.epoch_of,
        facts=facts,
    )
    return task, train


def _data_facts(shards: str) -> dict[str, float]:
    """The training tokens' unigram entropy and top token share (:mod:`pipeline.mlm.diagnostics`
    says how to read them), from the manifest or a bounded sample of an older shard set."""
    stats = token_statistics(shards, "train")
    entropy, top = stats["unigram_entropy"], stats["top_token_fraction"]
    if entropy is None:  # a split without ordinary tokens: nothing to compare against
        return {}
    console.info(
        f"data: unigram entropy {entropy:.2f} nats, most frequent token {top:.1%} of the training text "
        "(an MLM that ignores its context cannot get its loss below the entropy)"
    )
    return {"data/unigram_entropy": entropy, "data/top_token_fraction": top}
