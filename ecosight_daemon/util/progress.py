"""Progress for long work: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

logger = logging.getLogger(__name__)


class ProgressReporter:
    """Callable(done, total) that draws a bar on a TTY or logs every `interval_s`."""

    def __init__(
        self, verb: str, stream: TextIO | None = None, interval_s: float = 10.0, width: int = 30
    ) -> None:
        self._verb = verb
        self._stream = stream if stream is not None else sys.stderr
        self._is_tty = self._stream.isatty()
        self._interval_s = interval_s
        self._width = width
        self._started = time.monotonic()
        self._last_log = self._started

    def __call__(self, done: int, total: int) -> None:
        if self._is_tty:
            self._draw(done, total)
            return
        now = time.monotonic()
        if now - self._last_log >= self._interval_s or done == total:
            self._last_log = now
            logger.info("%s %d/%d (%.0f s)", self._verb, done, total, now - self._started)

    def _draw(self, done: int, total: int) -> None:
        filled = self._width * done // total if total else self._width
        bar = "#" * filled + "-" * (self._width - filled)
        elapsed = time.monotonic() - self._started
        self._stream.write(f"\r{self._verb} [{bar}] {done}/{total} {elapsed:.0f} s")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()
