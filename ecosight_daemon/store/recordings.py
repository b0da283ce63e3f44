"""The cache's record of long field recordings: each file's state, its chunks' patch
embeddings, onset features and shot-CNN inputs (keyed by content and embedding model, so a new classifier
re-scores without decoding), and the events the current version found in it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]
ONSET_COLUMNS = 4


@dataclass(frozen=True)
class RecordingRow:
    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    state: str  # pending, detecting, done, failed
    reason: str | None
    truncated: str | None
    start_utc: str | None
    clock_source: str | None
    seconds: float
    model_version: str | None  # the version whose events are stored; None: not scored yet
    clock_note: str | None = None  # clocks dropped as implausible, or sources that disagree


@dataclass(frozen=True)
class StoredDetection:
    id: int
    path: str
    label: str
    start_s: float
    end_s: float
    peak_s: float
    score: float
    model_version: str
    recording_start_utc: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CachedChunk:
    first_patch: int
    embeddings: np.ndarray  # (patches, dim) float32
    onsets: np.ndarray  # (patches, 4) float32
    spectrograms: np.ndarray  # (patches, 48 * 32) int8: each patch's shot-CNN input codes, flat


_COLUMNS = ("path, sha256, size, mtime_ns, state, reason, truncated, start_utc, clock_source, seconds, model_version, "
            "clock_note")
_DETECTION_COLUMNS = ("d.id, d.path, d.label, d.start_s, d.end_s, d.peak_s, d.score, d.model_version, r.start_utc")


class RecordingLedger:
    def __init__(self, db: sqlite3.Connection, transaction: Transaction) -> None:
        self._db = db
        self._transaction = transaction

    # --- recordings ------------------------------------------------------------------

    def all(self) -> dict[str, RecordingRow]:
        return {row[0]: RecordingRow(*row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM recordings")}

    def waiting(self) -> list[str]:
        """Recordings still to analyse (new, or part-way)."""
        return [row[0] for row in self._db.execute("SELECT path FROM recordings WHERE state IN ('pending', "
                                                   "'detecting')")]

    def get(self, path: str) -> RecordingRow | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM recordings WHERE path = ?", (path,)).fetchone()
        return None if row is None else RecordingRow(*row)

    def note(self, path: str, size: int, mtime_ns: int) -> None:
        """A settled file: new, or changed since it was recorded (then it starts again)."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM detections WHERE path = ?", (path,))
            db.execute(
                "INSERT INTO recordings (path, size, mtime_ns, state, first_seen, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, state = 'pending', sha256 = NULL, reason = NULL, truncated = NULL, "
                "seconds = 0, model_version = NULL, clock_note = NULL, attempts = 0, updated_at = excluded.updated_at",
                (path, size, mtime_ns, now, now))

    def started(self, path: str, sha256: str, start_utc: str | None, clock_source: str,
                clock_note: str | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE recordings SET state = 'detecting', sha256 = ?, start_utc = ?, clock_source = ?, "
                       "clock_note = ?, updated_at = ? WHERE path = ?",
                       (sha256, start_utc, clock_source, clock_note, time.time(), path))

    def turn_begins(self, path: str) -> int:
        """One more turn begun on this recording; how many began without ending (this one included)."""
        with self._transaction() as db:
            row = db.execute("UPDATE recordings SET attempts = attempts + 1 WHERE path = ? RETURNING attempts",
                             (path,)).fetchone()
        return 0 if row is None else int(row[0])

    def turn_ended(self, path: str, count_it: bool = False) -> None:
        """The turn ended (its step finished, or it failed with a reason); `count_it`: it was
        interrupted by something that may be the file's doing, so the count stays."""
        if count_it:
            return
        with self._transaction() as db:
            db.execute("UPDATE recordings SET attempts = 0 WHERE path = ?", (path,))

    def progressed(self, path: str, seconds: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE recordings SET seconds = ?, updated_at = ? WHERE path = ?", (seconds, time.time(), path))

    def copy_of(self, sha256: str, path: str) -> RecordingRow | None:
        """Another recording with this content whose chunks are all cached (a copy under a new name)."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM recordings WHERE sha256 = ? AND state = 'done' AND path != ? "
                               "LIMIT 1", (sha256, path)).fetchone()
        return None if row is None else RecordingRow(*row)

    def same_as(self, path: str, original: RecordingRow) -> None:
        with self._transaction() as db:
            db.execute("UPDATE recordings SET state = 'done', seconds = ?, truncated = ?, updated_at = ? "
                       "WHERE path = ?", (original.seconds, original.truncated, time.time(), path))

    def done_from_cache(self, path: str, seconds: float, truncated: str | None) -> None:
        """Every chunk of its content is cached already: done (not scored yet)."""
        with self._transaction() as db:
            db.execute("UPDATE recordings SET state = 'done', seconds = ?, truncated = ?, updated_at = ? "
                       "WHERE path = ?", (seconds, truncated, time.time(), path))

    def failed(self, path: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE recordings SET state = 'failed', reason = ?, attempts = 0, updated_at = ? "
                       "WHERE path = ?", (reason, time.time(), path))

    def unsettled(self, path: str, reason: str) -> None:
        """It changed while it was read: analysed again once it settles (the next scan sees a new size)."""
        with self._transaction() as db:
            db.execute("UPDATE recordings SET state = 'failed', reason = ?, size = -1, mtime_ns = -1, updated_at = ? "
                       "WHERE path = ?", (reason, time.time(), path))

    def forget(self, path: str) -> None:
        """The file is gone: its row and events go. Its chunks stay until `drop_orphan_chunks`
        (a file moved inside the folder is found again under its new name, with its chunks)."""
        with self._transaction() as db:
            db.execute("DELETE FROM detections WHERE path = ?", (path,))
            db.execute("DELETE FROM recordings WHERE path = ?", (path,))

    def drop_orphan_chunks(self) -> int:
        """Chunks of content no recording holds any more; how many went."""
        with self._transaction() as db:
            return db.execute("DELETE FROM recording_chunks WHERE sha256 NOT IN "
                              "(SELECT sha256 FROM recordings WHERE sha256 IS NOT NULL)").rowcount

    def clock_notes(self, limit: int) -> list[dict[str, str]]:
        """Recordings whose clock had a problem (dropped or disagreeing sources), newest first."""
        return [{"recording": path, "clock_source": source or "none", "note": note} for path, source, note in
                self._db.execute("SELECT path, clock_source, clock_note FROM recordings WHERE clock_note IS NOT NULL "
                                 "ORDER BY updated_at DESC LIMIT ?", (limit,))]

    def first_alert(self, sha256: str, detection: StoredDetection) -> bool:
        """True the first time this content's event (class, start) is alerted, whatever the path."""
        key = (sha256, detection.label, round(detection.start_s * 1000), time.time())
        with self._transaction() as db:
            inserted = db.execute("INSERT OR IGNORE INTO alerts_sent (sha256, label, start_ms, sent_at) "
                                  "VALUES (?, ?, ?, ?)", key).rowcount
        return bool(inserted == 1)

    def alerted_near(self, sha256: str, detection: StoredDetection, before_s: float) -> bool:
        """An alert of this content and class started within the event or up to `before_s` before
        it: the same event, its edges moved by a re-score."""
        return self._db.execute(
            "SELECT 1 FROM alerts_sent WHERE sha256 = ? AND label = ? AND start_ms BETWEEN ? AND ?",
            (sha256, detection.label, round((detection.start_s - before_s) * 1000),
             round(detection.end_s * 1000))).fetchone() is not None

    def counts_by_state(self) -> dict[str, int]:
        counts = {state: 0 for state in ("pending", "detecting", "done", "failed")}
        counts.update(dict(self._db.execute("SELECT state, COUNT(*) FROM recordings GROUP BY state")))
        return counts

    def seconds_analysed(self) -> float:
        return float(self._db.execute("SELECT COALESCE(SUM(seconds), 0) FROM recordings WHERE state = 'done'")
                     .fetchone()[0])

    def analysed_spans(self, limit: int) -> list[tuple[str, str, float]]:
        """(path, clock start, seconds) of analysed recordings with a clock time, latest start first."""
        return [(path, start, float(seconds)) for path, start, seconds in self._db.execute(
            "SELECT path, start_utc, seconds FROM recordings WHERE state = 'done' AND start_utc IS NOT NULL "
            "ORDER BY start_utc DESC LIMIT ?", (limit,))]

    def labels_found(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT label FROM detections ORDER BY label")]

    def scored_by_other_than(self, version: str) -> list[str]:
        """Done recordings whose events are not the given version's (to re-score)."""
        return [row[0] for row in self._db.execute(
            "SELECT path FROM recordings WHERE state = 'done' AND model_version IS NOT ? ORDER BY path", (version,))]

    # --- cached chunks ---------------------------------------------------------------

    def add_chunk(self, sha256: str, model_id: str, first_patch: int, embeddings: np.ndarray,
                  onsets: np.ndarray, spectrograms: np.ndarray, dtype: str, seconds: float, path: str,
                  last: bool = False, truncated: str | None = None) -> None:
        """A chunk's features and the recording's progress, committed together; the last
        chunk marks the recording done (not scored yet: model_version stays empty)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO recording_chunks (sha256, model_id, first_patch, patches, dtype, embeddings, "
                "onsets, spectrograms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, model_id, first_patch, len(embeddings), dtype,
                 np.ascontiguousarray(embeddings, dtype=dtype).tobytes(),
                 np.ascontiguousarray(onsets, dtype=np.float32).tobytes(),
                 np.ascontiguousarray(spectrograms, dtype=np.int8).tobytes()))
            db.execute("UPDATE recordings SET seconds = ?, truncated = ?, state = ?, updated_at = ? WHERE path = ?",
                       (seconds, truncated, "done" if last else "detecting", time.time(), path))

    def cached_patches(self, sha256: str, model_id: str) -> int:
        """Where a run over this content stopped: patches cached from the start without a gap."""
        next_patch = 0
        for first, count in self._db.execute(
                "SELECT first_patch, patches FROM recording_chunks WHERE sha256 = ? AND model_id = ? "
                "ORDER BY first_patch", (sha256, model_id)):
            if first != next_patch:
                break
            next_patch = first + count
        return next_patch

    def chunks(self, sha256: str, model_id: str) -> Iterator[CachedChunk]:
        """The cached chunks in order, one query each (a 24 h recording is ~650 MB of them,
        and no read stays open between the loop's steps)."""
        firsts = [row[0] for row in self._db.execute(
            "SELECT first_patch FROM recording_chunks WHERE sha256 = ? AND model_id = ? ORDER BY first_patch",
            (sha256, model_id))]
        for first in firsts:
            row = self._db.execute(
                "SELECT patches, dtype, embeddings, onsets, spectrograms FROM recording_chunks "
                "WHERE sha256 = ? AND model_id = ? AND first_patch = ?", (sha256, model_id, first)).fetchone()
            if row is None or row[0] == 0:  # an empty last chunk holds no patch
                continue
            count, dtype, embeddings, onsets, spectrograms = row
            yield CachedChunk(first, np.frombuffer(embeddings, dtype=dtype).reshape(count, -1).astype(np.float32),
                              np.frombuffer(onsets, dtype=np.float32).reshape(count, ONSET_COLUMNS),
                              np.frombuffer(spectrograms, dtype=np.int8).reshape(count, -1))

    def chunk_rows(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM recording_chunks").fetchone()[0])

    # --- detections ------------------------------------------------------------------

    def replace_detections(self, path: str, version: str,
                           events: list[tuple[str, float, float, float, float]]) -> list[int]:
        """The recording's events are now these (label, start, end, peak, score) of `version`; their ids."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM detections WHERE path = ?", (path,))
            ids = [int(db.execute(
                "INSERT INTO detections (path, label, start_s, end_s, peak_s, score, model_version, found_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", (path, *event, version, now)).fetchone()[0])
                for event in events]
            db.execute("UPDATE recordings SET model_version = ?, updated_at = ? WHERE path = ?", (version, now, path))
        return ids

    def detections(self, limit: int = 100, label: str | None = None) -> list[StoredDetection]:
        """Newest first: by the recording's clock time, then the offset in it."""
        where, parameters = ("WHERE d.label = ?", (label,)) if label else ("", ())
        rows = self._db.execute(
            f"SELECT {_DETECTION_COLUMNS} FROM detections d JOIN recordings r ON r.path = d.path {where} "
            "ORDER BY r.start_utc DESC, d.path DESC, d.start_s DESC LIMIT ?", (*parameters, limit))
        return [StoredDetection(*row) for row in rows]

    def spans_of(self, path: str) -> list[tuple[str, float, float]]:
        """(label, start, end) of the recording's stored events."""
        return [(label, float(start), float(end)) for label, start, end in self._db.execute(
            "SELECT label, start_s, end_s FROM detections WHERE path = ?", (path,))]

    def detection(self, detection_id: int) -> StoredDetection | None:
        row = self._db.execute(f"SELECT {_DETECTION_COLUMNS} FROM detections d JOIN recordings r ON r.path = d.path "
                               "WHERE d.id = ?", (detection_id,)).fetchone()
        return None if row is None else StoredDetection(*row)
