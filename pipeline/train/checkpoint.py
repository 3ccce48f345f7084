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

Resuming (:func:`resume_from`) never starts over silently: when checkpoints exist and none of them
loads, the run stops with an error naming each one and why.  Loading goes through
:func:`pipeline.train.elastic.load_checkpoint`, which reshards a checkpoint written by another
number of processes (or by FSDP for a run without it, and back).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import console
from pipeline.errors import PipelineError
from pipeline.io import fsync_dir, replace_dir, write_json
from pipeline.train.reductions import failed_anywhere
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
        """Checkpoint at ``state.step``.  Collective: every process must call it. Returns the final path.

        A failure to write on any process (disk full, quota, permissions, a writer's own error)
        becomes one error on every process naming the checkpoint; ``step_<N>`` is then never
        created and the previous checkpoint is untouched."""
        final = self.root / f"step_{state.step}"
        partial = self.root / f"step_{state.step}.partial"
        main = accelerator.is_main_process
        self._agreed(accelerator, partial, lambda: main and self._clear_for(state.step, partial, final))
        self._agreed(accelerator, partial, lambda: self._write(accelerator, state, partial))
        self._agreed(accelerator, partial, lambda: self._publish(accelerator, state, partial, final))
        return final

    def _write(self, accelerator, state: TrainerState, partial: Path) -> None:
        _test_pause(state.step, "begin", partial)
        accelerator.save_state(str(partial))

    def _publish(self, accelerator, state: TrainerState, partial: Path, final: Path) -> None:
        """The main process records the files' sizes, then renames ``.partial`` to ``step_<N>``."""
        _test_pause(state.step, "written", partial)
        if accelerator.is_main_process:
            record = {**state.state_dict(), "files": _file_sizes(partial)}
            write_json(partial / STATE_FILE, record, fsync=True)
            fsync_dir(partial)
            partial.rename(final)
            fsync_dir(self.root)
            self._rotate()

    def _agreed(self, accelerator, partial: Path, job: Callable[[], object]) -> None:
        """Run one phase of the save on every process; a failure anywhere stops all of them with
        the same error (the agreement is also the phase's barrier)."""
        error = None
        try:
            job()
        except Exception as e:  # noqa: BLE001 - torch.save / safetensors report a full disk as their own errors
            error = e
        if failed_anywhere(accelerator, error):
            previous = self.latest_complete()
            kept = (
                f"the previous checkpoint {previous[0]} is intact"
                if previous
                else "no earlier checkpoint exists"
            )
            reason = (
                (error.strerror if isinstance(error, OSError) else None)
                or error
                or "failed on another process"
            )
            raise PipelineError(f"could not write checkpoint {partial}: {reason}; {kept}") from None

    def _clear_for(self, step: int, partial: Path, final: Path) -> None:
        """Make room for ``step_<step>`` and create its empty ``.partial``.  Leftovers of killed saves
        go, and so do checkpoints of a later step than this run's: they belong to a run this one did
        not resume (train.resume=never, or an explicit older checkpoint), and left in place they
        would be what resume=auto picks."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.partial"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for other, path in self.step_dirs():
            if other > step:
                console.info(
                    f"removing {path}: a checkpoint of a run this one did not resume (now at step {step})"
                )
                _retire(path)
        if final.exists():  # re-saving the same step (e.g. after a stop signal): replace it
            shutil.rmtree(final)
        partial.mkdir()

    def _rotate(self) -> None:
        dirs = self.step_dirs()
        for _, path in dirs[: max(len(dirs) - self.keep, 0)]:
            _retire(path)


def _retire(path: Path) -> None:
    # rename first so a kill mid-delete never leaves a step_<N> that looks complete
    doomed = path.with_name(path.name + ".deleting.partial")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


PAUSE_ENV = "PIPELINE_TEST_PAUSE_CHECKPOINT"  # tests only: "STEP:PHASE:DIR" (see _test_pause)


def _test_pause(step: int, phase: str, partial: Path) -> None:
    """Test-only hook: hold the save of step ``STEP`` at ``PHASE`` ('begin': ``step_N.partial``
    exists, empty; 'written': its files are written, ``trainer_state.json`` and the rename are not)
    by writing ``DIR/paused`` and waiting for ``DIR/release`` - so a test can kill the process
    or fill the disk at a known point instead of a lucky moment."""
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec or spec.split(":", 2)[:2] != [str(step), phase]:
        return
    flags = Path(spec.split(":", 2)[2])
    flags.mkdir(parents=True, exist_ok=True)
    (flags / "paused").write_text(str(partial))
    deadline = time.monotonic() + 600
    while not (flags / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def resume_from(
    accelerator, resume: str, manager: CheckpointManager, load: Callable[[Path], None]
) -> tuple[Path, dict] | None:
    """Collective: load the checkpoint ``train.resume`` names and return ``(path, trainer state)``,
    or None for a fresh start.

    'never': fresh.  A path: that checkpoint, or an error.  'auto': the newest checkpoint that is
    complete and loads on every process, falling back to older ones; if checkpoints exist and none
    loads, an error naming each - never a silent fresh start over them (its own checkpoints would
    be rotated away by theirs, and it would replace theirs)."""
    if resume == "never":
        return None
    explicit = resume != "auto"
    if explicit and not Path(resume).is_dir():
        raise PipelineError(f"train.resume: checkpoint directory {resume} does not exist")
    paths = [Path(resume)] if explicit else [path for _, path in reversed(manager.step_dirs())]
    failures = []
    for path in paths:
        try:
            return path, _load_everywhere(accelerator, load, path)
        except PipelineError as e:
            failures.append(str(e))
            if not explicit:
                console.warn(f"{e}; falling back to the previous checkpoint")
    if explicit:
        raise PipelineError(f"train.resume={resume}: the checkpoint could not be loaded ({failures[0]})")
    if failures:
        raise PipelineError(
            f"train.resume=auto: none of the {len(failures)} checkpoint(s) in {manager.root} could be loaded "
            f"({'; '.join(failures)}). Not starting over on top of them: to start over on purpose set "
            "train.resume=never (this run's checkpoints then replace them) or use a new output_dir"
        )
    return None


def _load_everywhere(accelerator, load: Callable[[Path], None], path: Path) -> dict:
    """Check and load ``path`` on every process and return its trainer state; if either fails on
    any process, raise on all (with this process's reason), so they move on together."""
    error, state = None, {}
    try:
        state = check_checkpoint(path)
        load(path)
    except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint means "try the previous one"
        error = e
    if not failed_anywhere(accelerator, error):
        return state
    if isinstance(error, PipelineError) and str(error).startswith(f"checkpoint {path}"):
        raise error
    reason = f"{type(error).__name__}: {error}" if error else "it failed on another process"
    raise PipelineError(f"checkpoint {path} could not be loaded ({reason})")


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
