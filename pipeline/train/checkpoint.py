"""Crash-safe checkpoints: atomic save, validation, rotation, and finding the newest complete one.

Layout: ``<output_dir>/checkpoints/step_<N>/`` holds the full Accelerate state (model, optimizer,
grad scaler, RNG of every process; sharded files under FSDP/ZeRO) plus ``trainer_state.json``:
the trainer's state (:class:`~pipeline.train.state.TrainerState`: the step - the data position is a
pure function of it, so resuming is an O(1) seek - the best metric, the skipped steps) and the size
of every file in the directory.

Atomicity: every process writes into ``step_<N>.partial/``; after a barrier the main process writes
``trainer_state.json`` last, fsyncs, and renames the directory to ``step_<N>``.  A directory named
``step_<N>`` is therefore complete by construction, and a kill at any moment leaves at worst a
``.partial`` directory, which is ignored and cleaned up by the next save.  On resume a checkpoint
whose files do not match the recorded sizes is reported by name and skipped for the previous one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.io import fsync_dir, replace_dir, write_json
from pipeline.train.state import TrainerState

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _file_sizes(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }


def check_checkpoint(path: Path) -> dict:
    """Return the trainer state of a complete checkpoint, or raise PipelineError saying what is wrong."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise PipelineError(f"checkpoint {path} is incomplete: {STATE_FILE} is missing")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"checkpoint {path}: {STATE_FILE} is corrupted ({e})") from None
    for name, size in state.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise PipelineError(f"checkpoint {path} is missing {name}")
        if file.stat().st_size != size:
            raise PipelineError(
                f"checkpoint {path}: {name} has {file.stat().st_size} bytes, expected {size} (corrupted)"
            )
    return state


class CheckpointManager:
    """Save / rotate / locate checkpoints under ``root`` (``<output_dir>/checkpoints``)."""

    def __init__(self, root: str | Path, keep: int):
        self.root = Path(root)
        self.keep = keep

    def step_dirs(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()
        ]
        return sorted(found)

    def complete(self):
        """Checkpoints that validate, newest first; broken ones are reported and skipped."""
        for _, path in reversed(self.step_dirs()):
            try:
                state = check_checkpoint(path)
            except PipelineError as e:
                console.warn(f"{e}; falling back to the previous checkpoint")
                continue
            yield path, state

    def latest_complete(self) -> tuple[Path, dict] | None:
        return next(self.complete(), None)

    def save(self, accelerator, state: TrainerState) -> Path:
        """Checkpoint at ``state.step``.  Collective: every process must call it. Returns the final path."""
        step = state.step
        final = self.root / f"step_{step}"
        partial = self.root / f"step_{step}.partial"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.partial"):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # re-saving the same step (e.g. after a stop signal): replace it
                shutil.rmtree(final)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(partial))
        except OSError as e:  # disk full, quota, permissions: step_<N> is never created
            previous = self.latest_complete()
            kept = (
                f"the previous checkpoint {previous[0]} is intact"
                if previous
                else "no earlier checkpoint exists"
            )
            raise PipelineError(f"could not write checkpoint {partial}: {e.strerror or e}; {kept}") from None
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            record = {**state.state_dict(), "files": _file_sizes(partial)}
            write_json(partial / STATE_FILE, record, fsync=True)
            fsync_dir(partial)
            partial.rename(final)
            fsync_dir(self.root)
            self._rotate()
        accelerator.wait_for_everyone()
        return final

    def _rotate(self) -> None:
        dirs = self.step_dirs()
        for _, path in dirs[: max(len(dirs) - self.keep, 0)]:
            # rename first so a kill mid-delete never leaves a step_<N> that looks complete
            doomed = path.with_name(path.name + ".deleting.partial")
            path.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def resume_candidates(resume: str, manager: CheckpointManager):
    """``train.resume``: 'auto' (complete checkpoints, newest first; none = start fresh), 'never',
    or an explicit checkpoint path (which must be complete)."""
    if resume == "never":
        return
    if resume == "auto":
        yield from manager.complete()
        return
    path = Path(resume)
    if not path.is_dir():
        raise PipelineError(f"train.resume: checkpoint directory {path} does not exist")
    yield path, check_checkpoint(path)


def load_first_loadable(accelerator, candidates) -> tuple[Path, dict] | None:
    """Load the first candidate whose state loads on every process; a checkpoint whose files are
    intact in size but unreadable (bit rot, a foreign file) is reported by name and skipped."""
    for path, state in candidates:
        error = None
        try:
            accelerator.load_state(str(path))
        except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint means "try the previous one"
            error = e
        failed = accelerator.reduce(torch.tensor(float(error is not None), device=accelerator.device), "sum")
        if float(failed) == 0:
            return path, state
        console.warn(
            f"checkpoint {path} could not be loaded ({error or 'on another process'}); "
            "falling back to the previous checkpoint"
        )
    return None


def _drop_tied_copies(hf_model, weights: dict) -> dict:
    """Leave tied weights (e.g. the MLM decoder = the word embeddings) to the model config.

    Gathered FSDP / ZeRO-2 state dicts hold tied weights as separate copies, which ``save_pretrained``
    would store twice; dropping the tied names makes every backend export the same files."""
    tied = getattr(hf_model, "all_tied_weights_keys", None) or {}  # {tied name: source name}
    return {k: v for k, v in weights.items() if not (k in tied and tied[k] in weights)}


def export_model(accelerator, model, hf_model, out_dir: Path, tokenizer_dir: Path | None) -> None:
    """Collective: gather full weights (from FSDP/ZeRO shards if needed) and write ``out_dir`` as a
    standard HF directory (safetensors + config + tokenizer) that the Auto classes load.

    ``hf_model`` is the transformers model inside the prepared ``model`` (e.g. a wrapper's ``.mlm``)."""
    state = accelerator.get_state_dict(model)  # collective under FSDP / ZeRO-3
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        prefix = next(name for name, module in unwrapped.named_modules() if module is hf_model)
        prefix = prefix + "." if prefix else ""
        weights = _drop_tied_copies(
            hf_model, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        tmp = out_dir.with_name(out_dir.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        hf_model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        if tokenizer_dir is not None:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
        replace_dir(tmp, out_dir)
    accelerator.wait_for_everyone()
