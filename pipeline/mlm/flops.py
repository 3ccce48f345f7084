"""Training FLOPs per token of the MLM models, for throughput and MFU (``pipeline.train.throughput``).

Called by the pretraining task (``pipeline.mlm.build``) and the benchmarks with the model's
transformers config::

    flops_per_token = mlm_flops_per_token(hf_model.config, seq_len=128, predictions_per_seq=19.2)
"""

from __future__ import annotations

from transformers import PreTrainedConfig

__all__ = ["mlm_flops_per_token"]


def mlm_flops_per_token(hf_config: PreTrainedConfig, seq_len: int, predictions_per_seq: float) -> float:
    """Training FLOPs per input token (forward + backward = 3 x forward, 2 FLOPs per multiply-add).

    With H = hidden, I = intermediate, V = (padded) vocab, N = layers, S = seq_len, P = predictions/seq:

        6 * N * (4 H^2 + F H I)         QKV + output projections, feed-forward (F = 2 BERT, 3 ModernBERT GLU)
      + 12 * H * sum over layers of K   attention scores and weighted sum, K keys per query:
                                        S, or min(S, 2 * (local_attention // 2) + 1) in ModernBERT local layers
      + 6 * (H^2 + H V) * P / S         sparse head (transform + decoder) on the P predicted tokens only

    Embedding lookups, norms, activations and softmax are not counted (they are not matmuls).
    """
    hidden, inter, vocab = hf_config.hidden_size, hf_config.intermediate_size, hf_config.vocab_size
    layers = hf_config.num_hidden_layers
    ffn_matrices = 3 if hf_config.model_type == "modernbert" else 2
    encoder = 6 * layers * (4 * hidden**2 + ffn_matrices * hidden * inter)
    keys_per_layer = [seq_len] * layers
    if hf_config.model_type == "modernbert":
        window = 2 * (hf_config.local_attention // 2) + 1
        keys_per_layer = [
            min(seq_len, window) if kind == "sliding_attention" else seq_len for kind in hf_config.layer_types
        ]
    attention = 12 * hidden * sum(keys_per_layer)
    head = 6 * (hidden**2 + hidden * vocab) * predictions_per_seq / seq_len
    return float(encoder + attention + head)
