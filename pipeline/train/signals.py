"""SIGTERM / SIGUSR1 -> "checkpoint and exit cleanly" (what Slurm sends before a time limit).

The handler only sets a flag; the loop all-reduces it so every process stops at the same step,
writes a checkpoint, and exits, and a requeued job continues with ``train.resume=auto``.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignal:
    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
