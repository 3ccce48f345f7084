"""Tests for pipeline.finetune.features: tokenized features, dynamic padding, NER alignment and windows.

The tokenizer is a tiny WordPiece trained in a fixture (no hub)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.finetune import (
    ClassificationDataset,
    Example,
    FinetuneDataConfig,
    Sentence,
    TokenClassificationDataset,
    build_tag_set,
    collate_dynamic,
    plan_windows,
    read_table,
    word_predictions,
)

WORDS = "the movie was good john went to paris with mary in june london".split()

CORPUS = [
    "the movie was good and the acting was great",
    "a bad film with a terrible plot",
    "john went to paris with mary in june",
    "the weather in london is grey and wet",
    "she said the story was not funny at all",
] * 20


def make_tokenizer(vocab_size: int = 400):
    """A tiny WordPiece tokenizer trained here (no hub): [CLS] a [SEP] b [SEP] with type ids.

    The vocabulary is big enough for every corpus word to be one token (ties in training order
    then cannot change the result); other words split into several pieces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def random_iob2(rng: random.Random, n: int) -> list[str]:
    tags = []
    while len(tags) < n:
        kind = rng.choice(["O", "O", "PER", "LOC"])
        tags += ["O"] if kind == "O" else [f"B-{kind}"] + [f"I-{kind}"] * rng.randint(0, 2)
    return tags[:n]


def test_classification_dataset_and_dynamic_padding(tokenizer):
    single = [
        Example("the movie was good", None, 1, 1, "0"),
        Example("a bad film with a terrible plot " * 5, None, 0, 2, "1"),
    ]
    ds = ClassificationDataset(single, tokenizer, max_length=12)
    assert len(ds) == 2 and ds.lengths() == [6, 12]  # [CLS] 4 words [SEP]; the long one truncated
    assert tokenizer.decode(ds[0]["input_ids"]) == "[CLS] the movie was good [SEP]"
    batch = collate_dynamic([ds[0], ds[1]], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 12) and batch["labels"].dtype == torch.long
    assert batch["input_ids"][0, 6:].tolist() == [tokenizer.pad_token_id] * 6
    assert batch["attention_mask"].sum(1).tolist() == [6, 12]
    pairs = [Example("john went to paris", "mary went to london", 0.5, 1, "0")]
    item = ClassificationDataset(pairs, tokenizer, max_length=64)[0]
    assert item["token_type_ids"] == [0] * 6 + [1] * 5 and item["labels"] == 0.5
    assert collate_dynamic([item], 0, pad_to_multiple_of=8)["input_ids"].shape == (1, 16)
    assert collate_dynamic([item], 0)["labels"].dtype == torch.float
    unlabelled = ClassificationDataset(
        [Example("good", None, None, 1, "0")], tokenizer, return_token_type_ids=False
    )
    assert set(unlabelled[0]) == {"input_ids", "attention_mask"}


def test_real_sst2_tokenizes(shared_data, tokenizer):
    dev, _ = read_table(
        str(shared_data / "sst2/dev.tsv"),
        from_dict(FinetuneDataConfig, {"train": "-", "validation": "-"}),
        label_names=["0", "1"],
    )
    ds = ClassificationDataset(dev, tokenizer, max_length=32, chunk_size=300)
    assert len(ds) == 872 and max(ds.lengths()) == 32
    assert [f["labels"] for f in ds.features] == [e.label for e in dev]
    assert collate_dynamic(ds.features[:4], 0)["input_ids"].shape[1] == max(ds.lengths()[:4])


def test_unknown_tag_in_validation(tmp_path, tokenizer):
    sentence = Sentence(["john", "went"], ["B-PER", "B-MISC"], 7, "dev.txt")
    with pytest.raises(PipelineError, match=r"dev.txt:8: tag 'B-MISC' is not in the training tag set"):
        TokenClassificationDataset([sentence], tokenizer, {"O": 0, "B-PER": 1, "I-PER": 2})


def test_subtoken_alignment(tokenizer):
    sentence = Sentence(["john", "parisian", "went"], ["B-PER", "B-LOC", "O"], 1)
    label2id = {"O": 0, "B-PER": 1, "B-LOC": 2}
    pieces = len(tokenizer.tokenize("parisian"))
    assert pieces > 1  # the point of the test: one word, several sub-tokens
    first = TokenClassificationDataset([sentence], tokenizer, label2id)[0]
    assert first["labels"] == [-100, 1, 2] + [-100] * (pieces - 1) + [0, -100]
    assert len(first["input_ids"]) == len(first["token_type_ids"]) == 3 + pieces + 1
    every = TokenClassificationDataset([sentence], tokenizer, label2id, label_all_subtokens=True)[0]
    assert every["labels"] == [-100, 1] + [2] * pieces + [0, -100]
    unlabelled = TokenClassificationDataset([Sentence(["john"], [], 1)], tokenizer, label2id)[0]
    assert "labels" not in unlabelled


def test_plan_windows_cut_at_words_and_cover_everything():
    starts = [0, 2, 3, 6, 7, 8, 11]  # word starts in sub-tokens; 13 sub-tokens
    windows = plan_windows(starts, 13, size=5, stride=2)
    assert windows[0] == (0, 3) and windows[-1][1] == 13
    assert all(b - a <= 5 and a in starts and (b in starts or b == 13) for a, b in windows)
    assert all(b2 > b1 and a2 > a1 for (a1, b1), (a2, b2) in zip(windows, windows[1:]))
    assert plan_windows([0, 9], 10, size=4, stride=1) == [(0, 4), (9, 10)]  # one word longer than a window


@pytest.mark.parametrize("max_length,stride", [(8, 0), (12, 4), (16, 10)])
def test_long_sentences_predict_every_word_once(tokenizer, max_length, stride):
    rng = random.Random(max_length)
    words = WORDS + ["parisian", "\u200b"]  # a multi-piece word, a word with no sub-tokens at all
    sentences = [Sentence([rng.choice(words) for _ in range(n)], [], 1) for n in (3, 40, 97)]
    for s in sentences:
        s.tags = random_iob2(rng, len(s.tokens))
    tag_names = build_tag_set(sentences)
    label2id = {t: i for i, t in enumerate(tag_names)}
    ds = TokenClassificationDataset(sentences, tokenizer, label2id, max_length=max_length, stride=stride)
    assert len(ds) > len(sentences) and all(len(f["input_ids"]) <= max_length for f in ds.features)
    owned = [(w.sentence, word) for w in ds.windows for word in w.owned.values()]
    assert len(owned) == len(set(owned))  # no word predicted twice
    no_pieces = {(n, i) for n, s in enumerate(sentences) for i, t in enumerate(s.tokens) if t == "\u200b"}
    assert set(owned) == {(n, i) for n, s in enumerate(sentences) for i in range(len(s.tokens))} - no_pieces
    # the labels themselves as "predictions" (padded, as batches come) reassemble the gold tags
    width = max(len(f["labels"]) for f in ds.features)
    preds = np.array(
        [[max(x, 0) for x in f["labels"]] + [0] * (width - len(f["labels"])) for f in ds.features]
    )
    got = word_predictions(ds, preds, tag_names)
    want = [
        [t if (n, i) not in no_pieces else "O" for i, t in enumerate(s.tags)] for n, s in enumerate(sentences)
    ]
    assert got == want
    logits = [np.eye(len(tag_names))[row] for row in preds]  # (positions x labels) scores work too
    assert word_predictions(ds, logits, tag_names) == want


def test_window_context_and_prediction_lines(tokenizer):
    sentence = Sentence(WORDS * 3, ["O"] * 39, 1)
    ds = TokenClassificationDataset([sentence], tokenizer, {"O": 0}, max_length=12, stride=4)
    for w in ds.windows[1:-1]:  # inner windows own words away from both edges
        assert min(w.owned) > 1 and max(w.owned) < w.end - w.start
    with pytest.raises(PipelineError, match="data.conll.stride"):
        TokenClassificationDataset([sentence], tokenizer, {"O": 0}, max_length=12, stride=10)
    with pytest.raises(ValueError, match="predictions for 1 windows"):
        word_predictions(ds, [[0]], ["O"])
