"""Fine-tuning: labelled tables and CoNLL files -> features -> a model head, evaluation and metrics.

    splits = load_splits(cfg.data, "classification")          # or load_ner_splits(cfg.data)
    train = ClassificationDataset(splits.train, tokenizer, max_length=128)
    model = FinetuneModel(build_model(cfg.model, "classification", splits.label_names, tokenizer), ...)

Modules: ``task`` (the ``task`` section, :data:`TaskType`), ``tables`` (tsv/csv/jsonl/parquet/hub row readers), ``data`` (the ``data`` section,
examples, label sets), ``conll`` (NER files, IOB1/IOB2), ``features`` (tokenized datasets, dynamic
padding, NER windows), ``packing`` (packed training batches and the heads that read them), ``model`` (the ``model`` section, heads with summed losses), ``eval``
(predictions across processes), ``metrics`` (classification, regression, entity-level NER),
``build`` (the stage's :class:`~pipeline.train.TrainTask`: datasets, head, evaluation, outputs).
"""

from pipeline.finetune.build import (
    PREDICTIONS_FILE,
    RESULTS_FILE,
    build_finetune_task,
    finetune_complete,
    write_predictions,
)
from pipeline.finetune.conll import (
    ConllConfig,
    NerSplits,
    Sentence,
    build_tag_set,
    conll_prediction_lines,
    load_ner_splits,
    read_conll,
)
from pipeline.finetune.data import (
    Example,
    FinetuneDataConfig,
    Splits,
    apply_label_set,
    build_label_set,
    load_splits,
    read_table,
)
from pipeline.finetune.eval import eval_scalars, predict, split_metrics
from pipeline.finetune.features import (
    ClassificationDataset,
    TokenClassificationDataset,
    collate_dynamic,
    plan_windows,
    word_predictions,
)
from pipeline.finetune.metrics import (
    classification_metrics,
    confusion_matrix,
    extract_spans,
    ner_metrics,
    regression_metrics,
)
from pipeline.finetune.model import (
    FinetuneModel,
    FinetuneModelConfig,
    build_model,
    check_init_from,
    check_model_dir,
    count_targets,
    load_tokenizer,
)
from pipeline.finetune.packing import can_pack, collate_packed, pack_rows, packed_logits
from pipeline.finetune.tables import RowSource, open_rows, read_text
from pipeline.finetune.task import DEFAULT_METRIC, TaskConfig, TaskType

__all__ = [
    "DEFAULT_METRIC",
    "PREDICTIONS_FILE",
    "RESULTS_FILE",
    "TaskConfig",
    "TaskType",
    "build_finetune_task",
    "finetune_complete",
    "write_predictions",
    "ClassificationDataset",
    "ConllConfig",
    "Example",
    "FinetuneDataConfig",
    "FinetuneModel",
    "FinetuneModelConfig",
    "NerSplits",
    "RowSource",
    "Sentence",
    "Splits",
    "TokenClassificationDataset",
    "apply_label_set",
    "build_label_set",
    "build_model",
    "build_tag_set",
    "can_pack",
    "check_init_from",
    "check_model_dir",
    "classification_metrics",
    "collate_dynamic",
    "collate_packed",
    "confusion_matrix",
    "conll_prediction_lines",
    "count_targets",
    "eval_scalars",
    "extract_spans",
    "load_ner_splits",
    "load_splits",
    "load_tokenizer",
    "ner_metrics",
    "open_rows",
    "pack_rows",
    "packed_logits",
    "plan_windows",
    "predict",
    "read_conll",
    "read_table",
    "read_text",
    "regression_metrics",
    "split_metrics",
    "word_predictions",
]
