"""The daemon's database: SQLite in WAL mode, one transaction per file, one instance per thread
(it owns its connection). Each kind of record is its own ledger sharing that connection and its
transactions: the clip index (rebuildable), long recordings (chunks rebuildable, detections not),
the review queue and reviewers' decisions and the splits (people's work: back them up), decode
attempts, each site's learned background (rebuildable).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecosight_daemon.store.attempts import DecodeAttempts
from ecosight_daemon.store.clip_index import ClipIndex
from ecosight_daemon.store.recordings import RecordingLedger
from ecosight_daemon.store.review import ReviewLedger
from ecosight_daemon.store.schema import connect
from ecosight_daemon.store.site_scores import SiteScoreLedger
from ecosight_daemon.store.splits import SplitLedger


class Database:
    def __init__(self, connection: sqlite3.Connection, storage_dtype: str = "float16") -> None:
        self._db = connection
        self.clips = ClipIndex(connection, self._transaction, storage_dtype)
        self.attempts = DecodeAttempts(self._transaction)
        self.recordings = RecordingLedger(connection, self._transaction)
        self.review = ReviewLedger(connection, self._transaction)
        self.splits = SplitLedger(connection, self._transaction)
        self.sites = SiteScoreLedger(connection, self._transaction)

    @classmethod
    def open(cls, path: Path | str, storage_dtype: str = "float16") -> Database:
        """Open (creating or migrating if needed) the database at path, or ':memory:'."""
        return cls(connect(path), storage_dtype)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit the writes made inside together (the Ray engine writes results in batches)."""
        with self._transaction():
            yield

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, for reports (reports.py); writes go through the ledgers."""
        if not sql.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            raise ValueError("query() only reads; use the ledgers' methods to write")
        return self._db.execute(sql, parameters).fetchall()

    def changes_seen(self) -> tuple[int, int]:
        """Changes by any connection: equal values mean nothing was written in between."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._db.total_changes

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception; nested use joins the outer one."""
        if self._db.in_transaction:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
