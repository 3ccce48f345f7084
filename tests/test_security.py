"""Security rules: weights as safetensors, pickles only through weights_only loads, no remote code by
default, no config value evaluated as code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pipeline.finetune import FinetuneModelConfig
from tests.helpers.loop import run

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


class _Exploit:
    """Unpickling this creates the file named by ``marker`` - code running while a checkpoint loads."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("planted", ["random_states_0.pkl", "optimizer.bin"])
def test_resume_never_runs_code_from_a_checkpoint(tmp_path, planted):
    """A checkpoint file replaced by a pickle that runs code (its recorded size updated too, as an
    attacker would): resuming through the loop must not run it; the checkpoint is reported as
    unreadable and the run resumes from the previous one."""
    run(tmp_path, max_steps=8, save_every=4)
    ckpt = tmp_path / "checkpoints" / "step_8"
    assert list(ckpt.glob("model*.safetensors")) and not list(ckpt.glob("pytorch_model*.bin"))
    marker = tmp_path / "code-ran"
    torch.save({"state": _Exploit(marker)}, ckpt / planted)
    record = json.loads((ckpt / "trainer_state.json").read_text())
    record["files"][planted] = (ckpt / planted).stat().st_size
    (ckpt / "trainer_state.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="step_8 could not be loaded"):
        summary, _, _ = run(tmp_path, max_steps=8, save_every=4)
    assert not marker.exists(), "unpickling a checkpoint file ran code"
    assert summary["steps_this_run"] == 4  # fell back to step_4


def test_no_remote_code_and_no_eval():
    assert FinetuneModelConfig.__dataclass_fields__["trust_remote_code"].default is False
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path
        assert "yaml.load(" not in text or "_Loader" in text, path  # only the SafeLoader subclass
        assert "pickle.load" not in text, path
