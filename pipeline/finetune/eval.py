"""Fine-tuning evaluation: predictions over a split on every process, gathered in order, and metrics.

Each process runs the same number of equally sized batches (``pipeline.train.eval_batches``: FSDP and
ZeRO-3 need every process in every forward), padding rows get weight 0, and predictions are padded
across processes and gathered, so every process ends with each example's prediction exactly once,
in the split's order, whatever the world size.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.finetune.features import collate_dynamic, word_predictions
from pipeline.finetune.metrics import classification_metrics, ner_metrics, regression_metrics
from pipeline.finetune.model import count_targets
from pipeline.train import IGNORE_INDEX, eval_batches


def predict(accelerator, model, dataset, batch_size: int, pad_id: int) -> tuple[list[np.ndarray], float, int]:
    """Per-item predictions of ``dataset`` (in order), the summed loss and the number of targets
    (0 and 0 for unlabelled data). Collective: every process calls it and gets the same result."""
    predictions: list[np.ndarray] = []
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    plan = eval_batches(len(dataset), batch_size, accelerator.num_processes, accelerator.process_index)
    for indices, valid in plan:
        batch = collate_dynamic([dataset[int(i)] for i in indices], pad_id)
        if "labels" in batch:
            batch["weight"] = torch.from_numpy(valid.astype(np.float32))
            if batch["labels"].dim() > 1:
                batch["labels"][torch.from_numpy(~valid)] = IGNORE_INDEX
                targets = count_targets(batch)
            else:
                targets = int(valid.sum())
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        out = model(**batch, predict=True)
        if "loss_sum" in out:
            totals[0] += out["loss_sum"].double()
            totals[1] += targets
        preds = out["predictions"]
        if preds.dim() > 1:  # NER: sequence lengths differ between processes
            preds = accelerator.pad_across_processes(preds, dim=1, pad_index=0)
        order = torch.from_numpy(np.where(valid, indices, -1)).to(accelerator.device)
        for pred, index in zip(
            accelerator.gather(preds.contiguous()).cpu().numpy(), accelerator.gather(order).tolist()
        ):
            if index >= 0:
                predictions.append(pred)
    loss_sum, count = accelerator.reduce(totals, reduction="sum").tolist()
    return predictions, loss_sum, int(count)


def split_metrics(task: str, dataset, predictions: list[np.ndarray], label_names: list[str]) -> dict:
    """Task metrics of ``predictions`` against ``dataset``'s gold labels (per-type NER table included)."""
    if task == "ner":
        predicted = word_predictions(dataset, predictions, label_names)
        return ner_metrics(predicted, [s.tags for s in dataset.sentences])
    gold = [f["labels"] for f in dataset.features]
    if task == "regression":
        return regression_metrics([float(p) for p in predictions], gold)
    return classification_metrics([int(p) for p in predictions], gold, len(label_names))


def eval_scalars(metrics: dict, loss_sum: float, count: int, prefix: str = "eval/") -> dict[str, float]:
    """Flatten to TensorBoard scalars: eval/loss, eval/accuracy, eval/f1, eval/PER/f1 ..."""
    out = {f"{prefix}loss": loss_sum / max(count, 1)}
    for key, value in metrics.items():
        if key == "per_type":
            for kind, row in value.items():
                out.update({f"{prefix}{kind}/{name}": float(v) for name, v in row.items()})
        else:
            out[f"{prefix}{key}"] = float(value)
    return out
