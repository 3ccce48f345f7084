"""Packed token shards: the shard stage's config, the on-disk format, the reader and the writer.

    manifest = build_shards(cfg)                          # pipeline shard (cfg: ShardConfig)
    train = ShardReader(cfg.output_dir, split="train")    # O(1) random access to packed rows

Modules: ``config`` (:class:`ShardConfig`), ``format`` (layout, manifest, packing rule, file
writers), ``reader`` (:class:`ShardReader`), ``plan`` (tokenizer check, work units, who encodes
what), ``encode`` (tokenize into units), ``merge`` (units -> final shard set), ``build`` (the
stage end to end).
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

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MIN_SEQ_LEN",
    "SPLITS",
    "ShardConfig",
    "ShardReader",
    "build_shards",
    "dtype_for_vocab",
    "merge_parts",
    "read_manifest",
]
