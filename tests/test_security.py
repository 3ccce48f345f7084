"""Security rules: weights as safetensors, pickles only through weights_only loads, no remote code by
default, no config value evaluated as code."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from pipeline.finetune import FinetuneModelConfig
from tests.helpers.loop import run

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_checkpoint_weights_are_safetensors_and_pickles_load_weights_only(tmp_path):
    from accelerate.utils.other import load  # what Accelerator.load_state (our resume) reads pickles with

    run(tmp_path, max_steps=2, save_every=2)
    ckpt = tmp_path / "checkpoints" / "step_2"
    assert list(ckpt.glob("model*.safetensors")) and not list(ckpt.glob("pytorch_model*.bin"))
    for pickle_file in [*ckpt.glob("optimizer*.bin"), *ckpt.glob("random_states_*.pkl")]:
        load(pickle_file)  # weights_only=True by default: our files load under it
    torch.save({"x": _Exploit()}, tmp_path / "evil.pkl")
    with pytest.raises(pickle.UnpicklingError):
        load(tmp_path / "evil.pkl")


def test_no_remote_code_and_no_eval():
    assert FinetuneModelConfig.__dataclass_fields__["trust_remote_code"].default is False
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path
        assert "yaml.load(" not in text or "_Loader" in text, path  # only the SafeLoader subclass
        assert "pickle.load" not in text, path
