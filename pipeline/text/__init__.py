"""Raw text: resolving inputs, streaming documents, hub datasets, training and loading tokenizers.

Used by the ``tokenizer`` and ``shard`` stages (and by fine-tuning for hub tables)::

    sources = resolve_inputs(cfg.input)                  # files, globs, directories, hub names
    documents = iter_corpus(sources, cfg.corpus)         # a stream of strings
    tok, count = train_tokenizer(documents, model_type="wordpiece", vocab_size=8000)

Modules: ``inputs`` (input resolution), ``corpus`` (streaming readers, :class:`CorpusConfig`),
``hub`` (hub datasets and their local mirror), ``tokenizer`` (train / save), ``encoder`` (fast ids for
the shard stage, read from a tokenizer directory without ``transformers``), ``word_boundaries``
(whole-word tables).
"""

from pipeline.text.corpus import CorpusConfig, iter_corpus, iter_documents
from pipeline.text.encoder import IdEncoder, TokenizerFiles, read_tokenizer_dir
from pipeline.text.hub import (
    MIRROR,
    LocalCopy,
    find_local_copy,
    forget_unreachable_hub,
    hub_offline,
    load_hub_or_local,
    mirror_roots,
)
from pipeline.text.inputs import HUB_PREFIX, SUFFIXES, format_of, is_hub_name, resolve_inputs
from pipeline.text.tokenizer import (
    MODEL_TYPES,
    SPECIALS,
    SpecialTokens,
    check_output_dir,
    is_tokenizer_dir,
    load_tokenizer,
    save_tokenizer,
    to_transformers,
    train_tokenizer,
)
from pipeline.text.word_boundaries import word_continuation_table

__all__ = [
    "HUB_PREFIX",
    "MIRROR",
    "MODEL_TYPES",
    "SPECIALS",
    "SUFFIXES",
    "CorpusConfig",
    "IdEncoder",
    "LocalCopy",
    "SpecialTokens",
    "TokenizerFiles",
    "check_output_dir",
    "find_local_copy",
    "forget_unreachable_hub",
    "format_of",
    "hub_offline",
    "is_hub_name",
    "is_tokenizer_dir",
    "iter_corpus",
    "iter_documents",
    "load_hub_or_local",
    "load_tokenizer",
    "mirror_roots",
    "read_tokenizer_dir",
    "resolve_inputs",
    "save_tokenizer",
    "to_transformers",
    "train_tokenizer",
    "word_continuation_table",
]
