"""The configuration of ``pipeline shard``: every key of the stage (``pipeline shard --help``).

The stage (``pipeline.stages.shard``) re-exports :class:`ShardConfig` as its ``Config``; the
``pipeline run`` command embeds it as its ``shard`` section.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import REQUIRED, option, section
from pipeline.errors import ConfigError
from pipeline.text import CorpusConfig

MIN_SEQ_LEN = 8


@dataclass
class ShardConfig:
    """Configuration of ``pipeline shard``."""

    input: list[str] = option(REQUIRED, "corpus: files, globs, directories or hub dataset names")
    tokenizer: str = option(REQUIRED, "tokenizer directory (written by `pipeline tokenizer`)")
    output_dir: str = option(REQUIRED, "directory for manifest.json, shard files and the tokenizer copy")
    seq_len: int = option(REQUIRED, "tokens per packed sequence, [CLS] and [SEP] included")
    val_fraction: float = option(
        REQUIRED, "fraction of documents held out as the validation split, in [0, 1)"
    )
    seed: int = option(0, "seed of the train/validation document split")
    shard_size: int = option(65536, "sequences per shard file")
    shard_size_mb: float | None = option(None, "target shard file size in MiB; overrides shard_size when set")
    docs_per_unit: int = option(
        50000, "documents per resumable work unit (an interrupted run redoes at most one unit per process)"
    )
    num_workers: int = option(
        1, "number of independent workers (machines / array tasks) sharing the input files"
    )
    worker_index: int = option(0, "this worker's index in [0, num_workers)")
    merge: bool = option(
        False, "only merge the finished workers' parts into the final shard set, encode nothing"
    )
    keep_parts: bool = option(False, "keep the encoded work units (output_dir/parts) after merging")
    num_proc: int = option(0, "local encoding processes; 0 = one per available CPU core")
    batch_size: int = option(
        4000,
        "documents per batch handed to the tokenizer (a batch also ends at 8M characters); larger "
        "batches repeat more words, which fast_encode encodes once",
    )
    fast_encode: bool = option(
        True,
        "encode each distinct word of a batch once where the tokenizer splits on spaces (BERT-style); "
        "the ids are the same as document by document (false)",
    )
    verify: bool = option(True, "after writing, re-read every shard and check its sha256")
    progress: bool = option(True, "show progress bars")
    corpus: CorpusConfig = section(CorpusConfig, "how input files are read")

    def validate(self) -> None:
        if self.seq_len < MIN_SEQ_LEN:
            raise ConfigError(f"seq_len: must be >= {MIN_SEQ_LEN}, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        for key in ("shard_size", "docs_per_unit", "num_workers", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.shard_size_mb is not None and self.shard_size_mb <= 0:
            raise ConfigError(f"shard_size_mb: must be > 0 or null, got {self.shard_size_mb}")
        if not 0 <= self.worker_index < self.num_workers:
            raise ConfigError(f"worker_index: must be in [0, {self.num_workers}), got {self.worker_index}")
        if self.num_proc < 0:
            raise ConfigError(f"num_proc: must be >= 0 (0 = all cores), got {self.num_proc}")
        if not self.output_dir:
            raise ConfigError("output_dir: must not be empty")
