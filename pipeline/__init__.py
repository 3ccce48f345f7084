"""pipeline: raw text -> tokenizer -> packed shards -> MLM pretraining -> fine-tuning.

Every stage is ``pipeline <stage> --config FILE.yaml [key.sub=value ...]``; see README.md.
"""

__version__ = "0.1.0"
