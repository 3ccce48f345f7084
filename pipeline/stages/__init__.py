"""The stages. Each module defines ``Config`` (a dataclass tree), ``run(cfg)`` (returns the exit
code) and ``is_complete(cfg)`` (whether the stage's output is already there; ``pipeline run`` skips
such stages), and stays thin: the work lives in the subpackages of ``pipeline``."""

# stage name -> module; imported lazily so `pipeline --help` stays fast
STAGES = {
    "tokenizer": "pipeline.stages.tokenizer",
    "shard": "pipeline.stages.shard",
    "pretrain": "pipeline.stages.pretrain",
    "finetune": "pipeline.stages.finetune",
    "evaluate": "pipeline.stages.evaluate",
    "run": "pipeline.stages.run",
    "export": "pipeline.stages.export",
}
