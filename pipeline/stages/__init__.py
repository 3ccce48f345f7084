"""The stages. Each module defines ``Config`` (a dataclass tree) and ``run(cfg)``, and stays thin:
the work lives in the library modules of ``pipeline``."""

# stage name -> module; imported lazily so `pipeline --help` stays fast
STAGES = {
    "tokenizer": "pipeline.stages.tokenizer",
    "shard": "pipeline.stages.shard",
    "pretrain": "pipeline.stages.pretrain",
    "finetune": "pipeline.stages.finetune",
    "run": "pipeline.stages.run",
    "export": "pipeline.stages.export",
}
