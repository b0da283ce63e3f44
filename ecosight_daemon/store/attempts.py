"""How many times the daemon has started decoding each pending file, kept in the cache
before each start. A file that kills or hangs whatever reads it (the daemon itself, an OOM
kill of the service, a crashing decoder) would otherwise be read again at every start;
the count is for one version of a file (its size and mtime): a changed file starts at 0.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

MAX_ATTEMPTS = 3  # starts of one file version; the next is refused with a reason

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


class DecodeAttempts:
    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    def count(self, files: Iterable[tuple[str, int, int]]) -> dict[str, int]:
        """Count one more start for each (path, size, mtime_ns); each one's count now."""
        counts: dict[str, int] = {}
        with self._transaction() as db:
            for path, size, mtime_ns in files:
                row = db.execute(
                    "INSERT INTO decode_attempts (path, size, mtime_ns, attempts, last_at) VALUES (?, ?, ?, 1, ?) "
                    "ON CONFLICT(path) DO UPDATE SET attempts = CASE WHEN size = excluded.size AND "
                    "mtime_ns = excluded.mtime_ns THEN attempts + 1 ELSE 1 END, size = excluded.size, "
                    "mtime_ns = excluded.mtime_ns, last_at = excluded.last_at RETURNING attempts",
                    (path, size, mtime_ns, time.time()),
                ).fetchone()
                counts[path] = int(row[0])
        return counts

    def take_back(self, paths: Iterable[str]) -> None:
        """These starts did not happen or did not count: cancelled at shutdown, or the
        machine was short of descriptors or memory."""
        with self._transaction() as db:
            db.executemany("UPDATE decode_attempts SET attempts = attempts - 1 WHERE path = ? AND attempts > 0",
                           [(path,) for path in paths])


def forget_attempts(db: sqlite3.Connection, path: str) -> None:
    """A file's result is written (or the file is gone): its count starts again."""
    db.execute("DELETE FROM decode_attempts WHERE path = ?", (path,))
