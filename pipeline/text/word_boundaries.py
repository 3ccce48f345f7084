"""Which vocabulary tokens continue a word (for whole-word masking), per tokenizer model type.

Used by the pretrain stage::

    continuation = word_continuation_table(tokenizer)   # bool per vocab id -> pipeline.mlm.masking
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models

from pipeline.errors import PipelineError
from pipeline.text.tokenizer import BYTE_LEVEL_SPACE, METASPACE


def word_continuation_table(tokenizer: Any) -> np.ndarray:
    """Boolean array over vocab ids: True where the token continues the previous token's word.

    WordPiece: the token starts with ``##``.  Byte-level BPE: it does not start with ``Ġ``.
    Unigram/Metaspace: it does not start with ``▁``.  Special tokens are always False.  Accepts a
    ``transformers`` fast tokenizer or a ``tokenizers.Tokenizer``.  Note that the first word of a
    byte-level BPE text has no ``Ġ``; callers treat a token after a special token as a word start."""
    backend: Tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    vocab = backend.get_vocab(with_added_tokens=True)
    table = np.zeros(max(vocab.values()) + 1, dtype=bool)
    continues = _continuation_rule(backend)
    for token, index in vocab.items():
        table[index] = continues(token)
    for index, added in backend.get_added_tokens_decoder().items():
        if added.special:
            table[index] = False
    return table


def _continuation_rule(backend: Tokenizer):
    model = backend.model
    if isinstance(model, models.WordPiece):
        prefix = model.continuing_subword_prefix
        return lambda token: token.startswith(prefix)
    if isinstance(model, models.BPE) and _has_byte_level(backend):
        return lambda token: not token.startswith(BYTE_LEVEL_SPACE)
    if isinstance(model, models.Unigram):
        return lambda token: not token.startswith(METASPACE)
    raise PipelineError(
        f"cannot tell word boundaries for a {type(model).__name__} tokenizer "
        "(supported: WordPiece, byte-level BPE, Unigram with Metaspace)"
    )


def _has_byte_level(backend: Tokenizer) -> bool:
    """Whether the pre-tokenizer (alone or inside a Sequence) is ByteLevel."""
    spec = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    steps = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    return any(step.get("type") == "ByteLevel" for step in steps)
