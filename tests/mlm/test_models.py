"""Tests for pipeline.mlm.models: sizes, errors, sparse == dense MLM loss and grads, export, FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForMaskedLM, PreTrainedTokenizerFast
from transformers import pipeline as hf_pipeline

from pipeline.config import ConfigError, from_dict
from pipeline.mlm import mlm_flops_per_token
from pipeline.mlm.models import (
    DROPOUT_KEYS,
    UNUSED_LOGIT_BIAS,
    ModelConfig,
    SparseMLM,
    build_mlm_model,
    resolve_dims,
    unwrap_mlm,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
VOCAB = 100  # padded to 128 rows by the default pad_vocab_to_multiple=64
ARCHS = ["bert", "modernbert"]


def tiny_model(arch: str, seq_len: int = 32, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, **{"dropout": 0.0, **overrides})
    return build_mlm_model(cfg, vocab_size=VOCAB, special_ids=SPECIAL_IDS, seq_len=seq_len)


def masked_batch(seq_len: int = 32, slots: int = 6):
    """A batch with a padded row and a row with unused prediction slots."""
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, VOCAB, (3, seq_len), generator=gen)
    input_ids[:, 0] = SPECIAL_IDS["cls"]
    attention_mask = torch.ones_like(input_ids)
    input_ids[2, 20:], attention_mask[2, 20:] = SPECIAL_IDS["pad"], 0
    positions = torch.stack([torch.randperm(18, generator=gen)[:slots] + 1 for _ in range(3)])
    labels = torch.randint(5, VOCAB, (3, slots), generator=gen)
    positions[1, 4:], labels[1, 4:] = 0, -100
    dense_labels = torch.full_like(input_ids, -100)
    dense_labels.scatter_(1, positions[:, :4], labels[:, :4])
    dense_labels[[0, 0, 2, 2], positions[[0, 0, 2, 2], [4, 5, 4, 5]]] = labels[[0, 0, 2, 2], [4, 5, 4, 5]]
    return input_ids, attention_mask, positions, labels, dense_labels


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- config


def test_presets_and_overrides():
    assert resolve_dims(ModelConfig()) == {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 128,
    }
    assert resolve_dims(ModelConfig(preset="base"))["num_layers"] == 12
    mixed = from_dict(ModelConfig, {"preset": "mini", "hidden_size": 512, "num_heads": 8})
    assert resolve_dims(mixed) == {
        "hidden_size": 512,
        "num_layers": 4,
        "num_heads": 8,
        "intermediate_size": 1024,
    }
    custom = {
        "preset": "custom",
        "hidden_size": 96,
        "num_layers": 1,
        "num_heads": 3,
        "intermediate_size": 200,
    }
    assert resolve_dims(from_dict(ModelConfig, custom))["num_heads"] == 3


def test_config_errors():
    with pytest.raises(ConfigError, match="multiple of model.num_heads"):
        from_dict(ModelConfig, {"hidden_size": 100, "num_heads": 3})
    with pytest.raises(ConfigError, match="model.num_layers, model.num_heads"):
        from_dict(ModelConfig, {"preset": "custom", "hidden_size": 96, "intermediate_size": 10})
    with pytest.raises(ConfigError, match="'bert' | 'modernbert'"):
        from_dict(ModelConfig, {"arch": "roberta"})
    with pytest.raises(ConfigError, match="model.dropout"):
        from_dict(ModelConfig, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="exceeds model.max_position_embeddings=512"):
        build_mlm_model(ModelConfig(), vocab_size=VOCAB, special_ids=SPECIAL_IDS, seq_len=1024)
    with pytest.raises(ConfigError, match="no mask token"):
        build_mlm_model(
            ModelConfig(), vocab_size=VOCAB, special_ids={"pad": 0, "cls": 2, "sep": 3}, seq_len=32
        )
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        build_mlm_model(ModelConfig(), vocab_size=VOCAB, special_ids={**SPECIAL_IDS, "mask": 100}, seq_len=32)


@pytest.mark.parametrize("arch", ARCHS)
def test_build_sets_ids_padding_and_tying(arch):
    model = tiny_model(arch, num_heads=4)
    config = model.config
    assert config.hidden_size == 64 and config.num_attention_heads == 4 and config.num_hidden_layers == 2
    assert config.vocab_size == 128 and config.tokenizer_vocab_size == VOCAB
    assert (config.pad_token_id, config.cls_token_id, config.sep_token_id, config.mask_token_id) == (
        0,
        2,
        3,
        4,
    )
    # attn_implementation=auto: SDPA on CUDA, the eager matmul path on CPU (faster there in training)
    assert config._attn_implementation == ("sdpa" if torch.cuda.is_available() else "eager")
    assert tiny_model(arch, attn_implementation="sdpa").config._attn_implementation == "sdpa"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (model.get_input_embeddings().weight[VOCAB:] == 0).all()
    assert (model.get_output_embeddings().bias[VOCAB:] == UNUSED_LOGIT_BIAS).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_reaches_every_dropout_module(arch):
    assert ModelConfig().dropout == 0.0  # pretraining default: no dropout (ModernBERT / Cramming)
    model = tiny_model(arch, dropout=0.2)
    keys = {"bert": DROPOUT_KEYS[:2], "modernbert": DROPOUT_KEYS[2:]}[arch]
    assert {key: getattr(model.config, key) for key in keys} == dict.fromkeys(keys, 0.2)
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates <= {0.2, 0.0} and 0.2 in rates  # ModernBERT's head keeps its own 0.0 rate
    assert {m.p for m in tiny_model(arch).modules() if isinstance(m, torch.nn.Dropout)} <= {0.0}


# ----------------------------------------------------------------------------- sparse head


@pytest.mark.parametrize("arch", ARCHS)
def test_sparse_loss_and_grads_equal_dense_hf_loss(arch):
    model = tiny_model(arch)
    input_ids, attention_mask, positions, labels, dense_labels = masked_batch()
    sparse = SparseMLM(model)
    out = sparse(input_ids, attention_mask, positions, labels)
    assert all(value.dim() == 0 for value in out.values())
    assert out["count"].item() == 16 and out["loss_sum"].dtype == torch.float32
    (out["loss_sum"] / out["count"]).backward()
    sparse_loss, sparse_grads = (out["loss_sum"] / out["count"]).item(), grads(model)
    model.zero_grad()
    dense = model(input_ids=input_ids, attention_mask=attention_mask, labels=dense_labels)
    dense.loss.backward()
    assert sparse_loss == pytest.approx(dense.loss.item(), rel=1e-5)
    dense_grads = grads(model)
    assert sparse_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    predictions = dense.logits.argmax(-1)[dense_labels != -100]
    assert out["correct"].item() == (predictions == dense_labels[dense_labels != -100]).sum().item()


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_vocab_rows_are_sliced_off(arch):
    model = tiny_model(arch)
    with torch.no_grad():  # make the padded rows dominate: they must still not count
        model.get_output_embeddings().bias[VOCAB:] = 50.0
    input_ids, attention_mask, positions, labels, dense_labels = masked_batch()
    out = SparseMLM(model)(input_ids, attention_mask, positions, labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[..., :VOCAB]
    true_vocab_loss = F.cross_entropy(logits.reshape(-1, VOCAB), dense_labels.reshape(-1), reduction="sum")
    torch.testing.assert_close(out["loss_sum"], true_vocab_loss, rtol=1e-5, atol=1e-5)


def test_unwrap_mlm_through_wrappers():
    model = tiny_model("bert")

    class DataParallelLike(torch.nn.Module):  # DDP / FSDP / DeepSpeed keep the model in .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    class CompiledLike(torch.nn.Module):  # torch.compile's OptimizedModule keeps it in ._orig_mod
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    assert unwrap_mlm(DataParallelLike(CompiledLike(SparseMLM(model)))) is model
    assert unwrap_mlm(model) is model
    with pytest.raises(TypeError):
        unwrap_mlm(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- export


def save_tokenizer(directory) -> None:
    vocab = {token: i for i, token in enumerate(SPECIALS + [f"w{i}" for i in range(VOCAB - len(SPECIALS))])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    wrapped.save_pretrained(directory)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_loads_with_auto_class_and_runs_fill_mask(arch, tmp_path):
    """The pretraining stage's export (the prepared SparseMLM wrapper -> the HF model inside it ->
    safetensors + tokenizer), loaded back by transformers alone with the same logits."""
    from pipeline.train import TrainConfig, export_model, make_accelerator
    from tests.helpers.loop import reset_accelerate

    model = tiny_model(arch).eval()
    save_tokenizer(tmp_path / "tokenizer")
    reset_accelerate()
    acc = make_accelerator(TrainConfig(batch_size=1, lr=1e-3, max_steps=1), tmp_path, log=False)
    prepared = acc.prepare(SparseMLM(model))
    export_model(
        acc, prepared, unwrap_mlm(acc.unwrap_model(prepared)), tmp_path / "final", tmp_path / "tokenizer"
    )
    tmp_path = tmp_path / "final"
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    saved = set(load_file(tmp_path / "model.safetensors"))
    assert not any(name.startswith("mlm.") for name in saved)  # the wrapper's prefix is stripped
    assert len(saved) == len(dict(model.named_parameters())) + len([b for b in saved if "position_ids" in b])
    # the attention backend is not saved (auto picks eager on CPU): load with the same one for exactness
    attention = model.config._attn_implementation
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path, attn_implementation=attention).eval()
    assert type(loaded) is type(model)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    input_ids, attention_mask, *_ = masked_batch()
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits
        actual = loaded(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert (actual[..., VOCAB:] < UNUSED_LOGIT_BIAS / 2).all()  # padded rows can never be predicted
    predictions = hf_pipeline("fill-mask", model=str(tmp_path), device="cpu")("w1 w2 [MASK] w3", top_k=3)
    assert len(predictions) == 3 and all(p["token"] < VOCAB for p in predictions)


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    "arch, seq_len, expected",
    [
        # 6*2*(4*64^2 + 2*64*128) + 12*64*(32+32) + 6*(64^2 + 64*128)*5/32
        ("bert", 32, 393216 + 49152 + 11520),
        # 6*2*(4*64^2 + 3*64*128) + 12*64*(256 + 129: the local layer sees 2*64+1 keys) + 6*(64^2 + 64*128)*5/256
        ("modernbert", 256, 491520 + 295680 + 1440),
    ],
)
def test_flops_per_token_hand_computed(arch, seq_len, expected):
    config = tiny_model(arch, seq_len=seq_len).config
    assert config.vocab_size == 128
    assert mlm_flops_per_token(config, seq_len, predictions_per_seq=5) == expected
