"""Tests for pipeline.mlm.masking: rate, replacement split, specials, whole words, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.mlm import Masker, MaskingConfig
from pipeline.train import IGNORE_INDEX

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 1000
SEQ_LEN = 64


def packed_rows(n: int, seed: int = 0, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Rows like the shard writer's: [CLS] ... [SEP] [CLS] ... [SEP], non-special ids in between."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(len(SPECIALS), VOCAB, size=(n, seq_len))
    rows[:, 0] = CLS
    rows[:, seq_len // 2 - 1], rows[:, seq_len // 2] = SEP, CLS
    rows[:, -1] = SEP
    return rows


def continuation_table(seed: int = 0) -> np.ndarray:
    table = np.random.default_rng(seed).random(VOCAB) < 0.4
    table[SPECIALS] = False
    return table


def make_masker(seq_len: int = SEQ_LEN, seed: int = 0, **cfg) -> Masker:
    return Masker(
        MaskingConfig(**cfg),
        seq_len=seq_len,
        vocab_size=VOCAB,
        special_ids=SPECIALS,
        mask_id=MASK,
        continuation=continuation_table(),
        seed=seed,
        pad_id=PAD,
    )


def selected(out: dict) -> np.ndarray:
    """[B, L] bool of the predicted positions, rebuilt from mlm_positions / mlm_labels."""
    labels = out["mlm_labels"].numpy()
    positions = out["mlm_positions"].numpy()
    mask = np.zeros(out["input_ids"].shape, dtype=bool)
    rows, slots = np.nonzero(labels != IGNORE_INDEX)
    mask[rows, positions[rows, slots]] = True
    return mask


@pytest.mark.parametrize("whole_word", [False, True])
def test_rate_is_probability_of_maskable_tokens(whole_word):
    tokens = packed_rows(400)
    masker = make_masker(probability=0.15, whole_word=whole_word)
    out = masker(tokens, np.arange(400))
    per_row = selected(out).sum(axis=1)
    maskable = SEQ_LEN - 4
    k = int(np.floor(0.15 * maskable + 0.5))
    assert per_row.max() <= k <= masker.max_predictions
    if whole_word:  # the last word may not fit: a little under k, never over
        assert 0.85 * k < per_row.mean() <= k
    else:
        assert (per_row == k).all()


def test_max_predictions_bounds_rows_without_specials():
    masker = make_masker(seq_len=128, probability=0.3)
    tokens = np.random.default_rng(1).integers(len(SPECIALS), VOCAB, size=(8, 128))
    out = masker(tokens, np.arange(8))
    assert masker.max_predictions == 38  # floor(0.3 * 128 + 0.5)
    assert (selected(out).sum(axis=1) == 38).all()
    assert out["mlm_positions"].shape == (8, 38)


def test_replacement_split_80_10_10():
    tokens = packed_rows(2000)
    out = make_masker()(tokens, np.arange(2000))
    chosen = selected(out)
    new, old = out["input_ids"].numpy()[chosen], tokens[chosen]
    n = chosen.sum()
    masked = (new == MASK).mean()
    kept = (new == old).mean()  # includes random draws of the same id (about 0.1 / 995)
    randomised = ((new != MASK) & (new != old)).mean()
    tolerance = 4 * np.sqrt(0.25 / n)
    assert abs(masked - 0.8) < tolerance and abs(kept - 0.1) < tolerance and abs(randomised - 0.1) < tolerance
    assert not np.isin(new[new != MASK], SPECIALS).any()  # random ids are never special
    assert (out["input_ids"].numpy()[~chosen] == tokens[~chosen]).all()


def test_custom_split():
    tokens = packed_rows(500)
    out = make_masker(mask_token_fraction=0.0, random_token_fraction=1.0)(tokens, np.arange(500))
    chosen = selected(out)
    assert not (out["input_ids"].numpy()[chosen] == MASK).any()
    assert (out["input_ids"].numpy()[chosen] != tokens[chosen]).mean() > 0.99


def test_specials_never_selected_and_labels_are_originals():
    tokens = packed_rows(300)
    tokens[:, 10:13] = [UNK, MASK, PAD]
    out = make_masker(probability=0.5)(tokens, np.arange(300))
    chosen = selected(out)
    assert not chosen[np.isin(tokens, SPECIALS)].any()
    labels, positions = out["mlm_labels"].numpy(), out["mlm_positions"].numpy()
    real = labels != IGNORE_INDEX
    rows = np.nonzero(real)[0]
    assert (labels[real] == tokens[rows, positions[real]]).all()
    assert (positions[~real] == 0).all()
    for name in ("input_ids", "attention_mask", "mlm_positions", "mlm_labels"):
        assert str(out[name].dtype) == "torch.int64"


def test_padded_rows():
    tokens = packed_rows(4)
    tokens[1, 20:] = PAD
    tokens[2, 1:] = PAD  # only [CLS]: nothing to predict
    out = make_masker()(tokens, np.arange(4))
    assert out["attention_mask"].numpy()[1, :20].all() and not out["attention_mask"].numpy()[1, 20:].any()
    assert out["num_tokens"] == 2 * SEQ_LEN + 20 + 1
    per_row = selected(out).sum(axis=1)
    assert per_row[1] == np.floor(0.15 * 18 + 0.5) and per_row[2] == 0
    assert (out["mlm_labels"].numpy()[2] == IGNORE_INDEX).all()


def word_ids(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Reference word numbering by a plain loop: a word is a start token plus continuations."""
    ids = np.full(tokens.shape, -1)
    for r, row in enumerate(tokens):
        word, previous_special = -1, True
        for c, token in enumerate(row):
            if token in SPECIALS:
                previous_special = True
                continue
            if previous_special or not table[token]:
                word += 1
            ids[r, c], previous_special = word, False
    return ids


def test_whole_word_groups_all_in_or_all_out():
    tokens = packed_rows(200)
    tokens[:, 1] = np.flatnonzero(continuation_table())[5]  # a row that starts with a continuation
    out = make_masker(whole_word=True, probability=0.3)(tokens, np.arange(200))
    chosen, words = selected(out), word_ids(tokens, continuation_table())
    multi_token_words_chosen = 0
    for r in range(len(tokens)):
        for w in np.unique(words[r][words[r] >= 0]):
            in_word = chosen[r][words[r] == w]
            assert in_word.all() or not in_word.any(), f"row {r} word {w} partly masked"
            multi_token_words_chosen += in_word.all() and len(in_word) > 1
    assert multi_token_words_chosen > 50


def test_deterministic_for_same_seed_and_key():
    tokens = packed_rows(16)
    first = make_masker(seed=3)(tokens, np.arange(100, 116))
    again = make_masker(seed=3)(tokens, np.arange(100, 116))
    for name in ("input_ids", "mlm_positions", "mlm_labels"):
        assert (first[name] == again[name]).all()


@pytest.mark.parametrize("whole_word", [False, True])
def test_keys_and_seeds_change_the_mask(whole_word):
    row = np.repeat(packed_rows(1), 16, axis=0)
    out = make_masker(whole_word=whole_word)(row, np.arange(16))
    assert len({tuple(p) for p in out["mlm_positions"].numpy()}) == 16
    other_seed = make_masker(seed=1, whole_word=whole_word)(row, np.arange(16))
    assert (out["mlm_positions"] != other_seed["mlm_positions"]).any(axis=1).all()


@pytest.mark.parametrize("whole_word", [False, True])
def test_independent_of_batch_composition(whole_word):
    tokens, keys = packed_rows(12), np.arange(500, 512, dtype=np.uint64)
    masker = make_masker(whole_word=whole_word)
    whole = masker(tokens, keys)
    order = np.random.default_rng(0).permutation(12)
    shuffled = masker(tokens[order], keys[order])
    alone = masker(tokens[7:8], keys[7:8])
    for name in ("input_ids", "mlm_positions", "mlm_labels", "attention_mask"):
        assert (shuffled[name] == whole[name][order]).all()
        assert (alone[name][0] == whole[name][7]).all()


def test_config_validation():
    with pytest.raises(ConfigError, match="mlm.probability"):
        MaskingConfig(probability=1.5).validate()
    with pytest.raises(ConfigError, match="must be <= 1"):
        MaskingConfig(mask_token_fraction=0.8, random_token_fraction=0.3).validate()
    with pytest.raises(ConfigError, match="continuation"):
        Masker(
            MaskingConfig(whole_word=True), seq_len=8, vocab_size=VOCAB, special_ids=SPECIALS, mask_id=MASK
        )


def test_bad_batches_are_clear_errors():
    masker = make_masker()
    with pytest.raises(PipelineError, match="outside the vocabulary"):
        masker(np.full((2, SEQ_LEN), VOCAB + 5), np.arange(2))
    with pytest.raises(PipelineError, match="expects tokens"):
        masker(packed_rows(2, seq_len=32), np.arange(2))
