"""A write that failed (disk full, read-only, I/O error): the daemon keeps running and
tries again every STORAGE_RETRY_S. Each write is one transaction or an atomic replace,
so a failed one leaves the previous state; what it would have recorded is found again
by the rescan that follows recovery."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

STORAGE_RETRY_S = 5.0  # pause after a failed write before trying again
STORAGE_ERRORS = (sqlite3.OperationalError, OSError)


class StorageTrouble:
    def __init__(self, models_dir: Path, clock: Callable[[], float]) -> None:
        self._models_dir = models_dir
        self._clock = clock
        self.error: str | None = None
        self._retry_at = 0.0

    def failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self.error:  # logged once, not once per retry
            logger.error("cannot write under %s (%s); retrying every %.0f s", self._models_dir, message,
                         STORAGE_RETRY_S)
        self.error = message
        self._retry_at = self._clock() + STORAGE_RETRY_S

    def waiting(self) -> bool:
        """True until the next retry is due."""
        return self._clock() < self._retry_at

    def recovered(self) -> str | None:
        """After a round of writes that worked: the error that is now over, if there was one."""
        over, self.error = self.error, None
        return over
