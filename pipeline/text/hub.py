"""Hugging Face hub datasets: the one place that loads them and explains why it failed.

Used by the corpus readers (tokenizer, shard) and the fine-tuning table readers for inputs that are
not local files.  Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or with the hub
unreachable, the error says so and tells the user which key to point at local files.
"""

from __future__ import annotations

import os

from pipeline.errors import PipelineError


def hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def load_hub_dataset(
    name: str, config: str | None, split: str, *, streaming: bool, source: str, local_hint: str
):
    """``datasets.load_dataset(name, config, split=split)``; any failure -> one clear PipelineError.

    ``source`` is what the user wrote, ``local_hint`` how to use local files instead."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # ConnectionError, DatasetNotFoundError, ValueError for a bad split...
        cause = f"{type(e).__name__}: {e}"
        reason = (
            f"the hub is unreachable (offline mode: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; {cause})"
            if hub_offline()
            else f"loading it failed ({cause}); the hub may be unreachable or the name wrong"
        )
        raise PipelineError(
            f"{source!r} is not a local file, so it was taken as a Hugging Face hub dataset "
            f"(config {config!r}, split {split!r}), but {reason}. {local_hint}"
        ) from None
