"""Tests for pipeline.finetune.conll: CoNLL reading, -DOCSTART-, IOB1/IOB2 detection and conversion, errors."""

from __future__ import annotations

import random

import pytest

from pipeline.config import from_dict
from pipeline.errors import PipelineError
from pipeline.finetune import FinetuneDataConfig, extract_spans
from pipeline.finetune.conll import (
    Sentence,
    build_tag_set,
    conll_prediction_lines,
    detect_scheme,
    load_ner_splits,
    read_conll,
    to_iob2,
)

WORDS = "the movie was good john went to paris with mary in june london".split()


def random_iob2(rng: random.Random, n: int) -> list[str]:
    """Valid IOB2 with adjacent same-type spans (where IOB1 needs its B- tags)."""
    tags = []
    while len(tags) < n:
        kind = rng.choice(["O", "O", "PER", "LOC", "ORG"])
        tags += ["O"] if kind == "O" else [f"B-{kind}"] + [f"I-{kind}"] * rng.randint(0, 2)
    return tags[:n]


def iob2_to_iob1(tags: list[str]) -> list[str]:
    """Reference conversion: B- only where the previous tag is of the same type."""
    out = []
    for i, tag in enumerate(tags):
        prev_type = tags[i - 1][2:] if i and tags[i - 1] != "O" else None
        out.append("I-" + tag[2:] if tag.startswith("B-") and prev_type != tag[2:] else tag)
    return out


def write_conll(path, sentences: list[tuple[list[str], list[str]]]) -> str:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for k, (tokens, tags) in enumerate(sentences):
        lines += [f"{tok} NN I-NP {tag}" for tok, tag in zip(tokens, tags)] + [""]
        if k == 1:
            lines += ["-DOCSTART- -X- -X- O", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def ner_cfg(train: str, validation: str, **conll) -> FinetuneDataConfig:
    return from_dict(FinetuneDataConfig, {"train": train, "validation": validation, "conll": conll})


def test_iob1_and_iob2_files_give_identical_spans(tmp_path):
    rng = random.Random(0)
    data = [
        ([rng.choice(WORDS) for _ in range(n)], random_iob2(rng, n)) for n in rng.choices(range(1, 15), k=40)
    ]
    iob2 = write_conll(tmp_path / "iob2.txt", data)
    iob1 = write_conll(tmp_path / "iob1.txt", [(tokens, iob2_to_iob1(tags)) for tokens, tags in data])
    a, b = load_ner_splits(ner_cfg(iob2, iob2)), load_ner_splits(ner_cfg(iob1, iob1))
    assert (a.scheme, b.scheme) == ("iob2", "iob1")
    assert len(a.train) == 40 and [s.tokens for s in a.train] == [t for t, _ in data]  # -DOCSTART- skipped
    assert [s.tags for s in b.train] == [s.tags for s in a.train] == [t for _, t in data]
    assert [extract_spans(s.tags) for s in b.validation] == [extract_spans(t) for _, t in data]
    assert a.tag_names == b.tag_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert b.train[0].line == 3 and b.train[0].path == iob1


def test_scheme_detection_and_conversion():
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"], "iob1") == [
        "B-PER",
        "I-PER",
        "B-PER",
        "O",
        "B-LOC",
        "B-ORG",
    ]
    assert detect_scheme([Sentence(["a", "b"], ["B-PER", "I-PER"], 1)]) == "iob2"
    assert detect_scheme([Sentence(["a", "b"], ["O", "I-PER"], 1)]) == "iob1"
    with pytest.raises(ValueError, match="IOB2 does not allow"):
        to_iob2(["O", "I-PER"], "iob2")
    assert build_tag_set([Sentence(["a"], ["B-X"], 1)]) == ["O", "B-X", "I-X"]


def test_conll_errors_name_the_line(tmp_path):
    missing = tmp_path / "missing.txt"
    missing.write_text("John B-PER\nlives O\n\nParis\nis O\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"missing.txt:4: expected a token \(column 0\) and a tag"):
        read_conll(str(missing))
    assert [s.tokens for s in read_conll(str(missing), require_tags=False)][1] == ["Paris", "is"]
    iob1 = write_conll(tmp_path / "iob1.txt", [(["a", "b", "c"], ["O", "O", "I-PER"])])
    with pytest.raises(PipelineError, match=r"iob1.txt:5: 'I-PER' starts a span.*tag_scheme"):
        load_ner_splits(ner_cfg(iob1, iob1, tag_scheme="iob2"))
    bad = write_conll(tmp_path / "bad.txt", [(["a", "b"], ["O", "PER"])])
    with pytest.raises(PipelineError, match=r"bad.txt:4: tag 'PER' is not O, B-TYPE or I-TYPE"):
        load_ner_splits(ner_cfg(bad, bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- O\n\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="empty.txt: no sentences"):  # an empty validation set
        load_ner_splits(ner_cfg(iob1, str(empty)))
    two_col = tmp_path / "cols.txt"
    two_col.write_text("B-PER John x\n", encoding="utf-8")
    assert read_conll(str(two_col), token_column=1, tag_column=0)[0].tags == ["B-PER"]


def test_prediction_lines():
    lines = conll_prediction_lines(
        [Sentence(["a", "b"], ["B-X", "O"], 1), Sentence(["c"], [], 4)], [["B-X", "I-X"], ["O"]]
    )
    assert lines == ["a B-X B-X", "b O I-X", "", "c O", ""]
