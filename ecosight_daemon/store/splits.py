"""The split each source recording's group was given by earlier retrains: kept, so a group in
the test split stays there (the test set only grows). Not rebuildable: back it up."""

from __future__ import annotations

import sqlite3
import time

from ecosight_daemon.store.review import Transaction


class SplitLedger:
    def __init__(self, db: sqlite3.Connection, transaction: Transaction) -> None:
        self._db = db
        self._transaction = transaction

    def recorded(self) -> dict[str, str]:
        """group key -> 'train' | 'val' | 'test', as assigned by earlier retrains."""
        return dict(self._db.execute("SELECT group_key, split FROM group_splits").fetchall())

    def record(self, splits: dict[str, str]) -> None:
        """Insert new assignments and apply moves, in one transaction."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO group_splits (group_key, split, assigned_at) VALUES (?, ?, ?) "
                "ON CONFLICT(group_key) DO UPDATE SET split = excluded.split, "
                "assigned_at = excluded.assigned_at WHERE split != excluded.split",
                [(group, split, now) for group, split in splits.items()],
            )
