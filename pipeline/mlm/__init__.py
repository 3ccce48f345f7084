"""Masked-language-model pretraining: BERT / ModernBERT with a sparse MLM head, dynamic masking,
and the MLM data path (shards -> masked micro-batches, MLM evaluation).

    hf_model = build_mlm_model(cfg.model, vocab_size=..., special_ids=..., seq_len=128)
    masker = Masker(cfg.mlm, seq_len=128, vocab_size=..., special_ids=[...], mask_id=4)
    make_batch = train_batch_fn(ShardReader(shards), masker, plan)

Modules: ``models`` (model config, sparse head, FLOPs), ``masking`` (:class:`Masker`), ``data``
(the ``data`` section, batches and evaluation over shards), ``build`` (the pretrain stage's
:class:`~pipeline.train.TrainTask`).
"""

from pipeline.mlm.build import build_mlm_task
from pipeline.mlm.data import MlmDataConfig, mlm_evaluator, train_batch_fn
from pipeline.mlm.masking import Masker, MaskingConfig
from pipeline.mlm.models import (
    ENCODER_LAYER_CLASS,
    PRESETS,
    ModelConfig,
    SparseMLM,
    build_mlm_model,
    dropout_settings,
    encoder_config,
    mlm_flops_per_token,
    unwrap_mlm,
)

__all__ = [
    "ENCODER_LAYER_CLASS",
    "PRESETS",
    "Masker",
    "MaskingConfig",
    "MlmDataConfig",
    "ModelConfig",
    "SparseMLM",
    "build_mlm_model",
    "build_mlm_task",
    "dropout_settings",
    "encoder_config",
    "mlm_evaluator",
    "mlm_flops_per_token",
    "train_batch_fn",
    "unwrap_mlm",
]
