"""Model inputs for fine-tuning: tokenized features, dynamic padding, NER windows and reassembly.

Called by the finetune stage after :mod:`pipeline.finetune.data` / :mod:`pipeline.finetune.conll` have read
the files; nothing here trains::

    train = ClassificationDataset(splits.train, tokenizer, max_length=128)
    loader = DataLoader(train, batch_size=32, shuffle=True,
                        collate_fn=functools.partial(collate_dynamic, pad_id=tokenizer.pad_token_id))

    ner_val = TokenClassificationDataset(sentences, tokenizer, label2id, max_length=128, stride=32)
    ... model predictions per item, in dataset order (ids or logits, padded or not) ...
    tags = word_predictions(ner_val, predictions, tag_names)   # one tag per word of every sentence

Every dataset item is a dict of python lists / numbers: ``input_ids``, ``attention_mask``,
``token_type_ids`` (when the tokenizer lists them in ``model_input_names`` - BERT yes, ModernBERT
no - or as forced by ``return_token_type_ids``) and ``labels`` when the data is labelled:
an int class id, a float regression target, or for NER one id per position with -100 where ignored.
:func:`collate_dynamic` pads a batch to its own longest item.

NER alignment: the label goes on the first sub-token of each word, the others get -100 (or, with
``label_all_subtokens``, the same label).  Long sentences: sliding windows over whole words.  A
sentence whose sub-tokens exceed ``max_length`` (minus special tokens) becomes several windows that
cut only between words (unless one word alone is longer than a window) and overlap by about
``stride`` sub-tokens.  Every word is owned by exactly one window - the one where the word sits
furthest from an edge, so it has the most context - and only owned words carry labels, so training
and evaluation see each word exactly once.  Words the tokenizer turns into nothing (e.g. a lone
zero-width space) cannot be predicted; :func:`word_predictions` gives them ``O``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.finetune.conll import Sentence
from pipeline.finetune.data import Example
from pipeline.train import IGNORE_INDEX


def _require_fast(tokenizer: Any) -> None:
    # word_ids() and batch encoding come from the Rust tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise PipelineError("fine-tuning needs a fast tokenizer (a tokenizer.json); got a slow one")


def wants_token_type_ids(tokenizer: Any) -> bool:
    """Whether the model takes ``token_type_ids`` (BERT does, ModernBERT does not)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


class ClassificationDataset(torch.utils.data.Dataset):
    """Examples tokenized once (fast tokenizer, batch encode, truncation to ``max_length``).

    Items are dicts of python lists / numbers: ``input_ids``, ``attention_mask``, ``token_type_ids``
    (if ``return_token_type_ids``; default: when the tokenizer lists them) and ``labels`` (int
    class id or float target; absent for unlabelled examples).  Batch them with collate_dynamic."""

    def __init__(
        self,
        examples: list[Example],
        tokenizer: Any,
        max_length: int = 128,
        return_token_type_ids: bool | None = None,
        chunk_size: int = 4096,
    ):
        _require_fast(tokenizer)
        self.examples = examples
        keep_types = (
            wants_token_type_ids(tokenizer) if return_token_type_ids is None else return_token_type_ids
        )
        self.features: list[dict[str, Any]] = []
        for start in range(0, len(examples), chunk_size):  # chunks bound the peak memory of one call
            chunk = examples[start : start + chunk_size]
            pairs = [e.text_pair for e in chunk] if chunk[0].text_pair is not None else None
            enc = tokenizer(
                [e.text for e in chunk],
                pairs,
                truncation=True,
                max_length=max_length,
                return_token_type_ids=keep_types,
            )
            for i, example in enumerate(chunk):
                item = {
                    key: enc[key][i]
                    for key in ("input_ids", "attention_mask", "token_type_ids")
                    if key in enc
                }
                if example.label is not None:
                    item["labels"] = example.label
                self.features.append(item)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]

    def lengths(self) -> list[int]:
        """Token count per example (for length-bucketed sampling)."""
        return [len(f["input_ids"]) for f in self.features]


def collate_dynamic(
    features: list[dict[str, Any]], pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (rounded up to ``pad_to_multiple_of``).

    ``input_ids`` pad with ``pad_id``, sequence ``labels`` with -100 (ignored by the loss), other
    sequences with 0.  Scalar labels stack: int -> long (classes), float -> float (regression)."""
    longest = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, torch.Tensor] = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if not isinstance(values[0], (list, tuple)):
            dtype = torch.float if isinstance(values[0], float) else torch.long
            batch[key] = torch.tensor(values, dtype=dtype)
            continue
        fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
        batch[key] = torch.tensor([list(v) + [fill] * (longest - len(v)) for v in values], dtype=torch.long)
    return batch


# ----------------------------------------------------------------------------- NER windows


@dataclass
class Window:
    """One model input: sentence ``sentence``, sub-tokens ``[start, end)`` of its encoding;
    ``owned`` maps input positions to the word index predicted there."""

    sentence: int
    start: int
    end: int
    owned: dict[int, int] = field(default_factory=dict)


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a single sequence ([CLS] / [SEP])."""
    plain = tokenizer(["a"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    full = tokenizer(["a"], is_split_into_words=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k], full[k + len(plain) :]
    raise PipelineError("cannot locate the text inside the tokenizer's special tokens")


def plan_windows(word_starts: list[int], n_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) sub-token ranges of at most ``size`` that cut only at word starts (unless one
    word alone is longer) and overlap by about ``stride``; they cover ``0..n_tokens``."""
    bounds = sorted(set(word_starts) | {n_tokens})
    windows, start = [], 0
    while True:
        end = max((b for b in bounds if start < b <= start + size), default=start + size)
        windows.append((start, min(end, n_tokens)))
        if end >= n_tokens:
            return windows
        start = min((b for b in bounds if b >= end - stride and b > start), default=end)


class TokenClassificationDataset(torch.utils.data.Dataset):
    """Sentences as windows of sub-tokens with per-token ``labels`` (-100 where ignored).

    Items: ``input_ids``, ``attention_mask``, ``token_type_ids`` (if wanted, as in
    :class:`ClassificationDataset`), and ``labels`` when the sentences have tags.
    ``self.windows[i]`` says which sentence item ``i`` came from and which word each labelled
    position stands for; :func:`word_predictions` uses it to put predictions back together."""

    def __init__(
        self,
        sentences: list[Sentence],
        tokenizer: Any,
        label2id: dict[str, int],
        max_length: int = 128,
        stride: int = 32,
        label_all_subtokens: bool = False,
        return_token_type_ids: bool | None = None,
    ):
        _require_fast(tokenizer)
        self.prefix, self.suffix = _special_affixes(tokenizer)
        self.size = max_length - len(self.prefix) - len(self.suffix)  # sub-tokens of text per window
        if not 0 <= stride < self.size:
            raise PipelineError(
                f"data.conll.stride ({stride}) must be below data.max_length minus special tokens ({self.size})"
            )
        self.stride, self.label_all_subtokens = stride, label_all_subtokens
        self.keep_types = (
            wants_token_type_ids(tokenizer) if return_token_type_ids is None else return_token_type_ids
        )
        self.sentences = sentences
        self.windows: list[Window] = []
        self.features: list[dict[str, Any]] = []
        enc = tokenizer([s.tokens for s in sentences], is_split_into_words=True, add_special_tokens=False)
        for n, sentence in enumerate(sentences):
            tag_ids = [_tag_id(label2id, sentence, i) for i in range(len(sentence.tags))]
            self._add_windows(n, enc["input_ids"][n], enc.word_ids(n), tag_ids)

    def _add_windows(self, n: int, ids: list[int], word_ids: list[int | None], tag_ids: list[int]) -> None:
        """Cut sentence ``n`` (its sub-token ids and their word indices) into windows."""
        first = {}  # word -> position of its first sub-token
        for p, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = p
        spans = plan_windows(sorted(first.values()), len(ids), self.size, self.stride)
        owner = {w: _best_window(p, spans) for w, p in first.items()}
        shift = len(self.prefix)  # input position = sub-token position - window start + shift
        for k, (a, b) in enumerate(spans):
            input_ids = self.prefix + ids[a:b] + self.suffix
            item = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
            if self.keep_types:
                item["token_type_ids"] = [0] * len(input_ids)
            if tag_ids:
                labels = [IGNORE_INDEX] * len(input_ids)
                for p in range(a, b):
                    w = word_ids[p]
                    if w is not None and owner[w] == k and (self.label_all_subtokens or p == first[w]):
                        labels[p - a + shift] = tag_ids[w]
                item["labels"] = labels
            self.windows.append(Window(n, a, b, {first[w] - a + shift: w for w in first if owner[w] == k}))
            self.features.append(item)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]

    def lengths(self) -> list[int]:
        """Token count per window (for length-grouped batches)."""
        return [len(f["input_ids"]) for f in self.features]


def _tag_id(label2id: dict[str, int], sentence: Sentence, i: int) -> int:
    tag = sentence.tags[i]
    if tag not in label2id:
        raise PipelineError(
            f"{sentence.path}:{sentence.line + i}: tag {tag!r} is not in the training tag set {list(label2id)}"
        )
    return label2id[tag]


def _best_window(position: int, spans: list[tuple[int, int]]) -> int:
    """The window holding ``position`` furthest from its edges (the earliest on a tie)."""
    candidates = [
        (min(position - a, b - 1 - position), -k) for k, (a, b) in enumerate(spans) if a <= position < b
    ]
    return -max(candidates)[1]


def word_predictions(
    dataset: TokenClassificationDataset, predictions: Any, id2label: list[str] | dict[int, str]
) -> list[list[str]]:
    """Per-word predicted tags for every sentence of ``dataset``.

    ``predictions`` has one entry per dataset item, in dataset order: a sequence of predicted ids per
    input position (padding after the end is fine), or a (positions x labels) array of logits.
    Words that no window could predict (no sub-tokens) get "O"."""
    if len(predictions) != len(dataset.windows):
        raise ValueError(
            f"got predictions for {len(predictions)} windows, the dataset has {len(dataset.windows)}"
        )
    tags = [["O"] * len(s.tokens) for s in dataset.sentences]
    for window, pred in zip(dataset.windows, predictions):
        pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        if pred.ndim == 2:
            pred = pred.argmax(-1)
        for position, word in window.owned.items():
            tags[window.sentence][word] = id2label[int(pred[position])]
    return tags
