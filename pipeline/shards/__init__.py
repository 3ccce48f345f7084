"""Packed token shards: the shard stage's config, the on-disk format, the reader and the writer.

    manifest = build_shards(cfg)                          # pipeline shard (cfg: ShardConfig)
    train = ShardReader(cfg.output_dir, split="train")    # O(1) random access to packed rows

    stats = token_statistics(cfg.output_dir, "train")    # unigram entropy, top token share

Modules: ``config`` (:class:`ShardConfig`), ``format`` (layout, manifest, packing rule, file
writers), ``layout`` (where a split's sequences live, any format version), ``reader``
(:class:`ShardReader`), ``stats`` (token statistics), ``plan`` (tokenizer check, work units, who
encodes what), ``encode`` (tokenize into units), ``merge`` (units -> final shard set), ``build``
(the stage end to end).
"""

from pipeline.shards.build import build_shards
from pipeline.shards.config import MIN_SEQ_LEN, ShardConfig
from pipeline.shards.format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    dtype_for_vocab,
    read_manifest,
)
from pipeline.shards.merge import merge_parts
from pipeline.shards.reader import ShardReader
from pipeline.shards.stats import TokenCounter, token_statistics

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MIN_SEQ_LEN",
    "SPLITS",
    "ShardConfig",
    "ShardReader",
    "TokenCounter",
    "build_shards",
    "dtype_for_vocab",
    "merge_parts",
    "read_manifest",
    "token_statistics",
]
