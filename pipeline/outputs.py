"""Output directories of training stages: checked before any work, config recorded, summary written."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config import save_config
from pipeline.errors import PipelineError

MIN_FREE_BYTES = 100 * 2**20  # refuse to start with less than this free: checkpoints would fail later


def prepare_output_dir(path: str | Path, cfg, accelerator=None) -> Path:
    """Create ``path``, check it is writable and has space, write ``config.yaml`` (main process)."""
    path = Path(path)
    main = accelerator is None or accelerator.is_main_process
    if main:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write_test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise PipelineError(f"output_dir {path} is not writable: {e.strerror or e}") from None
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:
            raise PipelineError(
                f"output_dir {path} has only {free / 2**20:.0f} MiB free; need at least 100 MiB"
            )
        save_config(cfg, path / "config.yaml")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return path
