"""Helpers shared by the tests (test modules import these, never each other).

* ``corpus``: ``synthetic_corpus`` for runs of the real stages;
* ``loop``: the shared loop on a toy regression task (``run``, ``reset_accelerate``, ``DATA_X``);
* ``shards``: a tiny WordPiece tokenizer, corpora and shard-set builders and comparisons;
* ``finetune``: sentiment tables and a fast ``pipeline finetune`` call;
* ``distributed``: launching ``pipeline pretrain`` under ``accelerate launch`` with 2 CPU processes.

Fixtures shared across folders (``shared_data``, ``tiny_shards``, ``tiny_pretrained``) live in
``tests/conftest.py``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
