"""The one way the pipeline tells the user something: ``info``, ``warn`` and ``error``.

* ``info(text)``: progress and results, to stdout.  Goes around open progress bars (tqdm) instead
  of through them.
* ``warn(text)``: something the user should look at that does not stop the run (a corrupt
  checkpoint skipped, bad rows skipped): a :class:`PipelineWarning` (a ``UserWarning``), so it can
  be filtered or caught like any other warning; the command line shows it as ``warning: ...``.
* ``error(text)``: the one ``error: ...`` line of a failed command, to stderr.

``info`` and ``warn`` speak only on the main process (rank 0) of a multi-process launch, so a
message appears once, not once per process; ``error`` speaks on every process (an error may be
one process's own).
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["PipelineWarning", "error", "info", "is_main_process", "rank", "show_warnings_plainly", "warn"]


class PipelineWarning(UserWarning):
    """A warning of the pipeline to its user (see :func:`warn`)."""


def rank() -> int:
    """This process's global rank: the initialised process group's, else ``$RANK`` (set by the
    launcher for each process), else 0."""
    dist = sys.modules.get("torch.distributed")  # only if torch is loaded: never import it here
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def info(text: str) -> None:
    """A message for the user on stdout (main process only)."""
    if not is_main_process():
        return
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)


def warn(text: str, stacklevel: int = 2) -> None:
    """A :class:`PipelineWarning` (main process only); ``stacklevel`` 2 names the caller's line."""
    if is_main_process():
        warnings.warn(text, PipelineWarning, stacklevel=stacklevel + 1)


def show_warnings_plainly() -> None:
    """Print pipeline warnings as ``warning: ...`` lines (no source location); other warnings keep
    Python's format.  The command line calls this once."""
    plain = warnings.formatwarning
    if getattr(plain, "_pipeline", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, PipelineWarning):
            return f"warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    formatwarning._pipeline = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def error(text: str) -> None:
    """The ``error: ...`` line of a failed command, on stderr (every process)."""
    print(f"error: {text}", file=sys.stderr)
