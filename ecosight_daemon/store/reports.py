"""Read-only questions about the cache that people ask (status, `scan`): counts per
class, failures, label conflicts, an integrity check. The loop's own queries stay in store.py."""

from __future__ import annotations

from dataclasses import dataclass

from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database


@dataclass(frozen=True)
class ClassCounts:
    files: int = 0
    embedded: int = 0
    pending: int = 0
    failed: int = 0
    conflicts: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class CacheReports:
    def __init__(self, store: Database) -> None:
        self._store = store
        self._class_counts: tuple[tuple[int, int], dict[str, ClassCounts]] | None = None
        self._failed: tuple[tuple[int, int], list[dict[str, str]]] | None = None

    def class_counts(self) -> dict[str, ClassCounts]:
        """Per class: files, embedded, pending, failed, conflicts (label '' = no class).

        The status file asks for this every few seconds, so it is one aggregate query, and
        its answer is kept until this connection or another one writes to the database.
        """
        changes = self._store.changes_seen()
        if self._class_counts is None or self._class_counts[0] != changes:
            self._class_counts = changes, self._count_classes()
        return dict(self._class_counts[1])

    def _count_classes(self) -> dict[str, ClassCounts]:
        rows = self._store.query(
            "SELECT label, COUNT(*), "
            "SUM(state = 'embedded'), SUM(state = 'pending'), SUM(state = 'failed'), "
            "SUM(sha256 IN (SELECT sha256 FROM files WHERE sha256 IS NOT NULL AND label != '' "
            "GROUP BY sha256 HAVING COUNT(DISTINCT label) > 1)) "
            "FROM files GROUP BY label ORDER BY label"
        )
        return {label: ClassCounts(int(files), int(embedded), int(pending), int(failed), int(conflicts or 0))
                for label, files, embedded, pending, failed, conflicts in rows}

    def failed_files(self, limit: int | None = None) -> list[dict[str, str]]:
        """Failed files with their reasons, the most recently failed first (at most `limit`)."""
        if limit is None:
            return [{"path": r.path, "reason": r.reason or ""} for r in self._store.clips.files(FileState.FAILED)]
        changes = self._store.changes_seen()
        if self._failed is None or self._failed[0] != changes:
            rows = self._store.query("SELECT path, reason FROM files WHERE state = 'failed' "
                                     "ORDER BY updated_at DESC, path LIMIT ?", (limit,))
            self._failed = changes, [{"path": path, "reason": reason or ""} for path, reason in rows]
        return list(self._failed[1])

    def label_conflicts(self) -> list[dict[str, str | None]]:
        """Files whose bytes are also in another class folder (left out of training)."""
        conflicts = self._store.clips.conflicting_hashes()
        return [{"path": r.path, "class": r.label, "sha256": r.sha256}
                for r in self._store.clips.files() if r.sha256 in conflicts]

    def integrity_ok(self) -> bool:
        return bool(self._store.query("PRAGMA integrity_check")[0][0] == "ok")
