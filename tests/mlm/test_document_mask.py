"""``mlm.document_mask``: in a packed shard row every token attends only within its own document.

The guarantee tested: with the mask, each document's hidden states are those of the document run
alone (same position ids), for BERT and ModernBERT (whose sliding-window layers keep their window
inside the document), with SDPA and eager attention; and the stage passes the key to the model.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.mlm import ModelConfig, SparseMLM, build_mlm_model, document_segments
from pipeline.mlm.models import _encoder_and_head
from tests.helpers.loop import reset_accelerate

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_segments_follow_the_packers_separators():
    row = torch.tensor([[2, 7, 8, 3, 9, 3, 10, 11, 3, 0, 0]])
    assert document_segments(row, sep_id=3, pad_id=0).tolist() == [[0, 0, 0, 0, 1, 1, 2, 2, 2, -1, -1]]


def _model(arch: str, attention: str) -> SparseMLM:
    torch.manual_seed(0)
    extra = {"num_layers": 3} if arch == "modernbert" else {}  # layers 0 and 3 global, 1-2 sliding
    cfg = ModelConfig(arch=arch, preset="tiny", dropout=0.0, attn_implementation=attention, **extra)
    hf = build_mlm_model(cfg, vocab_size=100, special_ids=SPECIAL, seq_len=64)
    if arch == "modernbert":
        hf.config.local_attention = 8  # a window shorter than the documents
    return SparseMLM(hf, document_mask=True).eval()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_each_document_sees_only_itself(arch, attention):
    model = _model(arch, attention)
    encoder, _ = _encoder_and_head(model.mlm)
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(5, 100, (n,), generator=generator) for n in (12, 20, 9)]
    row = torch.cat([torch.tensor([2]), docs[0], torch.tensor([3]), docs[1], torch.tensor([3]), docs[2]])
    row = torch.cat([row, torch.tensor([3, 0, 0, 0])]).unsqueeze(0)  # ... [SEP] + padding
    mask = model._attention_mask(row, (row != 0).long())
    with torch.no_grad():
        packed = encoder(input_ids=row, attention_mask=mask).last_hidden_state[0]
        plain = encoder(input_ids=row, attention_mask=(row != 0).long()).last_hidden_state[0]
        segments = document_segments(row, 3, 0)[0]
        for doc in range(3):
            where = (segments == doc).nonzero().squeeze(1)
            alone = encoder(input_ids=row[:, where], position_ids=where.unsqueeze(0)).last_hidden_state[0]
            torch.testing.assert_close(packed[where], alone, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(plain[where], alone, atol=1e-3)  # without the mask it differs


def test_pretrain_stage_applies_the_key(tiny_shards, tmp_path):
    from pipeline.cli import main

    def run(out, *extra):
        reset_accelerate()
        args = ["pretrain", f"data.shards={tiny_shards}", f"output_dir={out}", "model.preset=tiny"]
        args += ["train.batch_size=8", "train.lr=1e-3", "train.max_steps=2", "train.log_every=1"]
        args += ["train.progress=false", "train.eval_every=0", "train.save_every=0", *extra]
        assert main(args) == 0
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r]

    # the tiny shards pack several documents per row, so the masked run computes something else
    assert run(tmp_path / "masked", "mlm.document_mask=true") != run(tmp_path / "plain")
