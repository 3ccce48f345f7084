"""Masked-LM models: BERT / ModernBERT built through ``transformers``, and the sparse MLM head.

The pretrain stage builds a standard Hugging Face model from the ``model`` config section::

    hf_model = build_mlm_model(cfg.model, vocab_size=len(tokenizer), seq_len=128,
                               special_ids={"pad": 0, "cls": 2, "sep": 3, "mask": 4})
    model = SparseMLM(hf_model)          # trained; unwrap_mlm(model).save_pretrained(...) exports

so the exported weights load with ``AutoModelForMaskedLM`` and run ``pipeline("fill-mask")``
without this package.

Vocabulary padding: the embedding matrix (tied to the MLM decoder) is padded to a multiple of
``pad_vocab_to_multiple`` rows for tensor-core / AMX friendly matmul shapes.  The padded rows are
never predicted: :class:`SparseMLM` slices logits to the tokenizer's vocabulary before the loss, so
the objective is the cross-entropy over the true vocabulary.  At build time the padded embedding
rows are zeroed and their decoder bias set to ``UNUSED_LOGIT_BIAS``, so in the exported model (which
computes logits over all rows) they can never win a fill-mask prediction; they receive no gradient
during training and keep those values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedConfig,
    PreTrainedModel,
)

from pipeline.config import ConfigError, option
from pipeline.mlm.segments import document_segments, segment_attention_mask
from pipeline.train import IGNORE_INDEX

UNUSED_LOGIT_BIAS = -1.0e4  # decoder bias of padded vocab rows: exp(-1e4) == 0 in every dtype
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128},
    # the quickstart's: the shape a ~7-minute 2-core CPU budget trains out of the unigram plateau (README)
    "micro": {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 256},
    "mini": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
    "small": {"hidden_size": 512, "num_layers": 4, "num_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
}
_DIM_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
ENCODER_LAYER_CLASS = {"bert": "BertLayer", "modernbert": "ModernBertEncoderLayer"}  # FSDP wrap units
# config keys that set the encoder's dropout (BERT-like and ModernBERT); model.dropout sets them all
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "embedding_dropout",
    "attention_dropout",
    "mlp_dropout",
)


@dataclass
class ModelConfig:
    arch: Literal["bert", "modernbert"] = option(
        "bert", "architecture: BertForMaskedLM or ModernBertForMaskedLM"
    )
    preset: Literal["tiny", "micro", "mini", "small", "base", "custom"] = option(
        "tiny",
        "size preset (hidden x layers: tiny 64x2, micro 128x2, mini 256x4, small 512x4, base 768x12); the keys below override it",
    )
    hidden_size: int | None = option(None, "hidden size (null = from the preset)")
    num_layers: int | None = option(None, "number of transformer layers (null = from the preset)")
    num_heads: int | None = option(None, "attention heads; must divide hidden_size (null = from the preset)")
    intermediate_size: int | None = option(
        None, "feed-forward width (ModernBERT: width of each GLU half) (null = from the preset)"
    )
    max_position_embeddings: int = option(512, "longest sequence the model accepts (>= the shards' seq_len)")
    dropout: float = option(
        0.0,
        "dropout on embeddings, hidden states and attention probabilities; 0 as in ModernBERT/NeoBERT/Cramming pretraining (also ~2x faster on CPU: no mask RNG, fused SDPA kernel); BERT used 0.1",
    )
    pad_vocab_to_multiple: int = option(
        64, "pad embedding rows to a multiple of this (extra rows never predicted)"
    )
    attn_implementation: str = option(
        "auto",
        "transformers attention backend: sdpa | eager | flash_attention_2 | auto = sdpa on CUDA, eager (matmul + softmax) on CPU, where training at seq 128 measured 3x faster in bf16 than SDPA's CPU flash kernel (its backward is slow) and equal in fp32",
    )

    def attention(self) -> str:
        """The attention backend ``attn_implementation`` resolves to on this machine."""
        if self.attn_implementation != "auto":
            return self.attn_implementation
        return "sdpa" if torch.cuda.is_available() else "eager"

    def matmul_dims(self) -> tuple[int, int]:
        """(hidden size, feed-forward width): the shapes ``train.precision=auto`` probes."""
        dims = resolve_dims(self)
        return dims["hidden_size"], dims["intermediate_size"]

    def validate(self) -> None:
        resolve_dims(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.pad_vocab_to_multiple < 1:
            raise ConfigError(f"model.pad_vocab_to_multiple must be >= 1, got {self.pad_vocab_to_multiple}")
        if self.max_position_embeddings < 1:
            raise ConfigError(
                f"model.max_position_embeddings must be >= 1, got {self.max_position_embeddings}"
            )


def resolve_dims(cfg: ModelConfig) -> dict[str, int]:
    """Final ``hidden_size``, ``num_layers``, ``num_heads``, ``intermediate_size``: preset < explicit keys."""
    dims = dict(PRESETS.get(cfg.preset, {}))
    dims.update({key: getattr(cfg, key) for key in _DIM_KEYS if getattr(cfg, key) is not None})
    missing = [f"model.{key}" for key in _DIM_KEYS if key not in dims]
    if missing:
        raise ConfigError(f"model.preset=custom needs {', '.join(missing)}")
    for key, value in dims.items():
        if value < 1:
            raise ConfigError(f"model.{key} must be >= 1, got {value}")
    if dims["hidden_size"] % dims["num_heads"]:
        raise ConfigError(
            f"model.hidden_size ({dims['hidden_size']}) must be a multiple of model.num_heads ({dims['num_heads']})"
        )
    return dims


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    return math.ceil(vocab_size / multiple) * multiple


def _token_ids(special_ids: dict[str, int]) -> dict[str, int]:
    """``{"pad": 0, ...}`` (also accepts ``pad_token_id`` / ``pad_token`` keys) -> HF config ids."""
    ids = {key.removesuffix("_id").removesuffix("_token"): value for key, value in special_ids.items()}
    missing = [name for name in ("pad", "cls", "sep", "mask") if name not in ids]
    if missing:
        raise ConfigError(f"the tokenizer has no {', '.join(missing)} token (needed by the MLM model)")
    return {f"{name}_token_id": ids[name] for name in ("pad", "cls", "sep", "mask")}


def encoder_config(cfg: ModelConfig, *, vocab_size: int, special_ids: dict[str, int]) -> PreTrainedConfig:
    """The transformers config (BertConfig / ModernBertConfig) for ``cfg``: also used by fine-tuning
    from scratch (``model.init_from=none``) so both stages build the same architecture."""
    return _hf_config(cfg, vocab_size, _token_ids(special_ids))


def _hf_config(cfg: ModelConfig, vocab_size: int, token_ids: dict[str, int]) -> PreTrainedConfig:
    dims = resolve_dims(cfg)
    common = dict(
        vocab_size=padded_vocab_size(vocab_size, cfg.pad_vocab_to_multiple),
        tokenizer_vocab_size=vocab_size,  # the rows SparseMLM predicts; saved in config.json
        hidden_size=dims["hidden_size"],
        num_hidden_layers=dims["num_layers"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=dims["intermediate_size"],
        max_position_embeddings=cfg.max_position_embeddings,
        attn_implementation=cfg.attention(),
        tie_word_embeddings=True,
        **token_ids,
    )
    if cfg.arch == "bert":
        config = BertConfig(**common)
    else:
        config = ModernBertConfig(
            bos_token_id=token_ids["cls_token_id"], eos_token_id=token_ids["sep_token_id"], **common
        )
    config.update(dropout_settings(config, cfg.dropout))
    return config


def dropout_settings(config: PreTrainedConfig, dropout: float) -> dict[str, float]:
    """``{key: dropout}`` for each dropout key (:data:`DROPOUT_KEYS`) that ``config`` has."""
    return {key: dropout for key in DROPOUT_KEYS if hasattr(config, key)}


def build_mlm_model(
    cfg: ModelConfig, *, vocab_size: int, special_ids: dict[str, int], seq_len: int
) -> PreTrainedModel:
    """A freshly initialised BertForMaskedLM / ModernBertForMaskedLM (no hub access)."""
    if seq_len > cfg.max_position_embeddings:
        raise ConfigError(
            f"sequence length {seq_len} exceeds model.max_position_embeddings={cfg.max_position_embeddings}"
        )
    token_ids = _token_ids(special_ids)
    out_of_range = {k: v for k, v in token_ids.items() if not 0 <= v < vocab_size}
    if out_of_range:
        raise ConfigError(f"special token ids {out_of_range} are outside the vocabulary of {vocab_size}")
    hf_config = _hf_config(cfg, vocab_size, token_ids)
    model = (BertForMaskedLM if cfg.arch == "bert" else ModernBertForMaskedLM)(hf_config)
    _silence_padded_rows(model, vocab_size)
    return model


@torch.no_grad()
def _silence_padded_rows(model: PreTrainedModel, vocab_size: int) -> None:
    """Zero the padded embedding rows and give them a very negative decoder bias (module doc)."""
    model.get_input_embeddings().weight[vocab_size:] = 0.0
    bias = model.get_output_embeddings().bias
    if bias is not None:
        bias[vocab_size:] = UNUSED_LOGIT_BIAS


def _encoder_and_head(
    model: PreTrainedModel,
) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The model's own encoder and its MLM head (transform + tied decoder) as a function."""
    if isinstance(model, BertForMaskedLM):
        return model.bert, model.cls
    if isinstance(model, ModernBertForMaskedLM):
        return model.model, lambda hidden: model.decoder(model.head(hidden))
    raise TypeError(
        f"SparseMLM supports BertForMaskedLM and ModernBertForMaskedLM, not {type(model).__name__}"
    )


class SparseMLM(torch.nn.Module):
    """MLM loss computed only at the predicted positions (a fixed number per row: static shapes).

    ``forward`` returns 0-dim tensors (no host sync): ``loss_sum`` (fp32 cross-entropy summed over
    real predictions), ``count`` (number of real predictions) and ``correct`` (argmax hits).  The
    loop divides the summed loss by the global count, so the objective is the mean over every
    masked token of the optimizer step whatever the accumulation or process count.

    ``document_mask=True`` (``mlm.document_mask``): tokens attend only within their own document of
    the packed row, the documents being delimited by the packer's [SEP] (``pipeline.mlm.segments``);
    position ids stay those of the row.
    """

    def __init__(self, mlm_model: PreTrainedModel, document_mask: bool = False):
        super().__init__()
        self.mlm = mlm_model
        _encoder_and_head(mlm_model)  # fail early on an unsupported model
        config = mlm_model.config
        self.vocab_size: int = getattr(config, "tokenizer_vocab_size", None) or config.vocab_size
        self.document_mask = document_mask
        if document_mask:
            segment_attention_mask(config, torch.zeros(1, 1, dtype=torch.long))  # fail early: backend
        # FSDP's TRANSFORMER_BASED_WRAP (no class list in the launch config) shards what this names:
        # each encoder layer is its own unit; the embeddings and the tied MLM head (BERT ties the
        # decoder weight AND bias) stay together in the root unit.  The HF list also names the
        # embeddings, which would put tied tensors in two units.  (No get_input_embeddings here
        # either: Accelerate would carve the embedding and decoder into a unit of their own.)
        self._no_split_modules = [ENCODER_LAYER_CLASS[config.model_type]]

    def _attention_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        if not self.document_mask:
            return attention_mask
        config = self.mlm.config
        segments = document_segments(input_ids, config.sep_token_id, config.pad_token_id)
        return segment_attention_mask(config, segments)  # padding is a segment of its own

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mlm_positions: torch.Tensor,
        mlm_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        encoder, head = _encoder_and_head(self.mlm)
        mask = self._attention_mask(input_ids, attention_mask)
        hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        batch, slots = mlm_positions.shape
        index = mlm_positions.unsqueeze(-1).expand(batch, slots, hidden.size(-1))
        picked = hidden.gather(1, index).reshape(batch * slots, hidden.size(-1))
        # padded vocab rows are never predicted; fp32 for the loss, and for argmax (4x faster than
        # on bf16 logits on CPU)
        logits = head(picked)[:, : self.vocab_size].float()
        labels = mlm_labels.reshape(-1)
        real = labels != IGNORE_INDEX
        loss_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((logits.argmax(dim=-1) == labels) & real).sum()
        return {"loss_sum": loss_sum, "count": real.sum().float(), "correct": correct.float()}


def unwrap_mlm(module: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside SparseMLM / torch.compile / DDP-style wrappers (for export)."""
    current = module
    for _ in range(16):
        if isinstance(current, PreTrainedModel):
            return current
        if isinstance(current, SparseMLM):
            current = current.mlm
        elif hasattr(current, "_orig_mod"):
            current = current._orig_mod
        elif isinstance(getattr(current, "module", None), torch.nn.Module):
            current = current.module
        else:
            break
    raise TypeError(f"no Hugging Face model found inside {type(module).__name__}")
