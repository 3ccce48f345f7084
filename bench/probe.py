"""An MLM evaluator that belongs to neither side of a comparison: held-out text, Hugging Face's own
masking, a fixed seed - only the exported model directory and its tokenizer are read.

    python -m bench.probe runs/quickstart/pretrain/final                      # WikiText-2 valid.txt
    python -m bench.probe DIR --text FILE --rows 1024 --json out.json

1. The text is prepared the way ``run_mlm_no_trainer`` prepares it: every non-empty line tokenized
   with special tokens, concatenated, cut into blocks of ``seq_len`` (the remainder dropped).
2. ``DataCollatorForLanguageModeling(mlm_probability=0.15)`` masks each batch (80/10/10), after
   ``torch.manual_seed(seed)``: the same masks for every model that shares the tokenizer.
3. ``probe_loss`` / ``probe_accuracy``: cross-entropy and top-1 accuracy over the masked tokens.
4. ``probe_loss_without_context``: the same masked tokens, with every unpredicted token replaced by
   the token at the same position in the next row of the batch; ``context_gain`` is the difference
   (about 0 for a model that ignores its context, several nats for one that reads it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common import DATA_DIR, quiet_environment

__all__ = ["probe"]


def _blocks(tokenizer, text_file: Path, seq_len: int) -> torch.Tensor:
    lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [token for row in tokenizer(lines)["input_ids"] for token in row]
    count = len(ids) // seq_len
    return torch.tensor(ids[: count * seq_len]).view(count, seq_len)


@torch.no_grad()
def probe(
    model_dir: str | Path,
    text_file: str | Path = DATA_DIR / "wikitext-2" / "valid.txt",
    *,
    seq_len: int = 128,
    rows: int = 0,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Probe ``model_dir`` (an ``AutoModelForMaskedLM`` directory with its tokenizer); see the module doc."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    data = _blocks(tokenizer, Path(text_file), seq_len)
    data = data[:rows] if rows else data
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    torch.manual_seed(seed)
    loss = blind = correct = count = 0.0
    for start in range(0, len(data), batch_size):
        batch = collator([{"input_ids": row} for row in data[start : start + batch_size]])
        ids, labels = batch["input_ids"], batch["labels"]
        predicted = labels != -100
        originals = torch.where(predicted, labels, ids)
        without_context = torch.where(predicted, ids, originals.roll(1, dims=0))
        for inputs, is_real in ((ids, True), (without_context, False)):
            logits = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits[predicted].float()
            total = float(torch.nn.functional.cross_entropy(logits, labels[predicted], reduction="sum"))
            if is_real:
                loss += total
                correct += float((logits.argmax(-1) == labels[predicted]).sum())
                count += float(predicted.sum())
            else:
                blind += total
    count = max(count, 1.0)
    return {
        "probe_loss": loss / count,
        "probe_accuracy": correct / count,
        "probe_loss_without_context": blind / count,
        "context_gain": (blind - loss) / count,
        "probe_tokens": int(count),
        "probe_rows": len(data),
    }


def main() -> None:
    quiet_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--text", default=str(DATA_DIR / "wikitext-2" / "valid.txt"))
    parser.add_argument("--rows", type=int, default=0, help="probe only the first N blocks (0 = all)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    result = probe(args.model_dir, args.text, seq_len=args.seq_len, rows=args.rows)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
