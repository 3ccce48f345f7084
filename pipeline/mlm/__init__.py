"""Masked-language-model pretraining: BERT / ModernBERT with a sparse MLM head, dynamic masking,
and the MLM data path (shards -> masked micro-batches, MLM evaluation).

    hf_model = build_mlm_model(cfg.model, vocab_size=..., special_ids=..., seq_len=128)
    masker = Masker(cfg.mlm, seq_len=128, vocab_size=..., special_ids=[...], mask_id=4)
    make_batch = train_batch_fn(ShardReader(shards), masker, plan)

Modules: ``models`` (model config, sparse head), ``flops`` (FLOPs per token), ``segments``
(block-diagonal attention for packed rows), ``masking`` (:class:`Masker`), ``data``
(the ``data`` section, batches and evaluation over shards), ``build`` (the pretrain stage's
:class:`~pipeline.train.TrainTask`).
"""

from pipeline.mlm.build import build_mlm_task
from pipeline.mlm.data import MlmDataConfig, mlm_evaluator, train_batch_fn
from pipeline.mlm.flops import mlm_flops_per_token
from pipeline.mlm.masking import Masker, MaskingConfig
from pipeline.mlm.models import (
    ENCODER_LAYER_CLASS,
    PRESETS,
    ModelConfig,
    SparseMLM,
    build_mlm_model,
    dropout_settings,
    encoder_config,
    unwrap_mlm,
)
from pipeline.mlm.segments import PAD_SEGMENT, document_segments, segment_attention_mask, supports_segments

__all__ = [
    "ENCODER_LAYER_CLASS",
    "PAD_SEGMENT",
    "PRESETS",
    "Masker",
    "MaskingConfig",
    "MlmDataConfig",
    "ModelConfig",
    "SparseMLM",
    "build_mlm_model",
    "build_mlm_task",
    "document_segments",
    "dropout_settings",
    "encoder_config",
    "mlm_evaluator",
    "mlm_flops_per_token",
    "segment_attention_mask",
    "supports_segments",
    "train_batch_fn",
    "unwrap_mlm",
]
