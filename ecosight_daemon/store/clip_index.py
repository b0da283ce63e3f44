"""The database's record of labelled clips: the embedding models, the file index, the embeddings.

Embeddings are keyed by (content sha256, embedding model id), so a renamed file
is never embedded again and two models' embeddings never mix. The `files` index
maps each path under audio_dir to its hash, label, size, mtime and state.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.store.attempts import forget_attempts
from ecosight_daemon.store.recordings import Transaction

logger = logging.getLogger(__name__)

class FileState(str, Enum):
    PENDING = "pending"
    EMBEDDED = "embedded"
    FAILED = "failed"


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to audio_dir, '/'-separated
    label: str
    sha256: str | None
    size: int
    mtime_ns: int
    state: FileState
    reason: str | None

    def matches(self, size: int, mtime_ns: int) -> bool:
        return self.size == size and self.mtime_ns == mtime_ns


class ClipIndex:
    """The clips under audio_dir: which embedding model is current, each file's hash, label and
    state, and the per-patch embeddings of its bytes. Rebuildable from the clips themselves."""

    def __init__(self, connection: sqlite3.Connection, transaction: Transaction, storage_dtype: str) -> None:
        self._db = connection
        self._transaction = transaction
        self._dtype = storage_dtype
        self.model_id: str | None = self._meta("current_model_id")

    # --- the embedding model -------------------------------------------------

    def adopt_model(self, model_id: str, fingerprint: dict[str, Any]) -> int:
        """Make model_id current; re-mark file states for it. Returns files now pending."""
        previous = self.model_id
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO models (model_id, fingerprint, first_used) VALUES (?, ?, ?)",
                (model_id, json.dumps(fingerprint, sort_keys=True), time.time()),
            )
            _set_meta(db, "current_model_id", model_id)
            _set_meta(db, "current_handle", str(fingerprint.get("handle", "")))
            if previous == model_id:
                return 0
            db.execute(
                "UPDATE files SET state = 'embedded', reason = NULL WHERE state = 'pending' "
                "AND sha256 IN (SELECT sha256 FROM embeddings WHERE model_id = ?)",
                (model_id,),
            )
            changed = db.execute(
                "UPDATE files SET state = 'pending', reason = NULL WHERE state = 'embedded' "
                "AND sha256 NOT IN (SELECT sha256 FROM embeddings WHERE model_id = ?)",
                (model_id,),
            ).rowcount
        self.model_id = model_id
        if previous is not None:
            logger.warning(
                "embedding model changed from %s to %s: %d files will be embedded again "
                "(embeddings of the old model are kept, never mixed)",
                previous, model_id, changed,
            )
        return changed

    def save_audioset_head(self, model_id: str, head: AudiosetHead) -> None:
        """Keep YAMNet's AudioSet layer with its model, so pooling needs no TensorFlow."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO audioset_heads (model_id, kernel, bias) VALUES (?, ?, ?)",
                (model_id, _float32_blob(head.kernel), _float32_blob(head.bias)),
            )

    def audioset_head(self, model_id: str | None = None) -> AudiosetHead | None:
        row = self._db.execute(
            "SELECT kernel, bias FROM audioset_heads WHERE model_id = ?", (model_id or self.model_id,)
        ).fetchone()
        if row is None:
            return None
        bias = np.frombuffer(row[1], dtype="<f4")
        kernel = np.frombuffer(row[0], dtype="<f4").reshape(-1, len(bias))
        return AudiosetHead(kernel.copy(), bias.copy())

    def model_fingerprint(self, model_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT fingerprint FROM models WHERE model_id = ?", (model_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    # --- the file index ---------------------------------------------------------

    def file_record(self, path: str) -> FileRecord | None:
        row = self._db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE path = ?", (path,)).fetchone()
        return _file_record(row) if row else None

    def files(self, state: FileState | None = None, limit: int | None = None) -> list[FileRecord]:
        """Index rows in path order, optionally only one state and at most `limit`."""
        where, args = ("WHERE state = ?", [state.value]) if state is not None else ("", [])
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files {where} ORDER BY path LIMIT ?", (*args, -1 if limit is None else limit)
        )
        return [_file_record(row) for row in rows]

    def count_files(self, state: FileState) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM files WHERE state = ?", (state.value,)).fetchone()[0])

    def note_file(self, path: str, label: str, size: int, mtime_ns: int, sha256: str | None) -> FileState:
        """Record a new or changed file; it is embedded already if its bytes are cached."""
        state = FileState.EMBEDDED if sha256 and self.has_embedding(sha256) else FileState.PENDING
        with self._transaction() as db:
            _upsert_file(db, path, label, sha256, size, mtime_ns, state, None)
        return state

    def record_embedding(
        self,
        path: str,
        label: str,
        size: int,
        mtime_ns: int,
        sha256: str,
        embeddings: np.ndarray,
        duration_s: float,
    ) -> None:
        """Store a file's per-patch embeddings and mark it embedded, in one transaction."""
        model_id = self._require_model()
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"expected (patches, dim) embeddings, got shape {embeddings.shape}")
        data = np.ascontiguousarray(embeddings, dtype=self._dtype).tobytes()
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO embeddings "
                "(sha256, model_id, patches, dim, dtype, data, duration_s, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, model_id, embeddings.shape[0], embeddings.shape[1], self._dtype,
                 data, duration_s, time.time()),
            )
            _upsert_file(db, path, label, sha256, size, mtime_ns, FileState.EMBEDDED, None)

    def record_failure(
        self, path: str, label: str, size: int, mtime_ns: int, sha256: str | None, reason: str
    ) -> None:
        with self._transaction() as db:
            _upsert_file(db, path, label, sha256, size, mtime_ns, FileState.FAILED, reason)

    def forget_files(self, paths: list[str]) -> int:
        """Remove deleted files from the index; their cached embeddings stay for reuse."""
        with self._transaction() as db:
            for path in paths:
                forget_attempts(db, path)
            return sum(db.execute("DELETE FROM files WHERE path = ?", (p,)).rowcount for p in paths)

    # --- embeddings ----------------------------------------------------------------

    def has_embedding(self, sha256: str) -> bool:
        if self.model_id is None:
            return False
        row = self._db.execute(
            "SELECT 1 FROM embeddings WHERE sha256 = ? AND model_id = ?", (sha256, self.model_id)
        ).fetchone()
        return row is not None

    def cached_hashes(self) -> set[str]:
        """Every content hash with embeddings under the current model."""
        if self.model_id is None:
            return set()
        rows = self._db.execute("SELECT sha256 FROM embeddings WHERE model_id = ?", (self.model_id,))
        return {row[0] for row in rows}

    def embeddings_for(self, sha256: str) -> np.ndarray | None:
        """The (patches, dim) float32 embeddings of these bytes under the current model."""
        if self.model_id is None:
            return None
        row = self._db.execute(
            "SELECT patches, dim, dtype, data FROM embeddings WHERE sha256 = ? AND model_id = ?",
            (sha256, self.model_id),
        ).fetchone()
        if row is None:
            return None
        patches, dim, dtype, data = row
        return np.frombuffer(data, dtype=dtype).reshape(patches, dim).astype(np.float32)

    def embedding_count(self, model_id: str | None = None) -> int:
        return int(self._db.execute(
            "SELECT COUNT(*) FROM embeddings WHERE model_id = ?", (model_id or self.model_id,)
        ).fetchone()[0])

    # --- training samples -------------------------------------------------------------

    def conflicting_hashes(self) -> set[str]:
        """Hashes present under more than one class folder: label conflicts."""
        rows = self._db.execute(
            "SELECT sha256 FROM files WHERE sha256 IS NOT NULL AND label != '' "
            "GROUP BY sha256 HAVING COUNT(DISTINCT label) > 1"
        )
        return {row[0] for row in rows}

    def training_hashes(self) -> set[str]:
        """Hashes of embedded, labeled files that are not label conflicts."""
        rows = self._db.execute(
            "SELECT DISTINCT sha256 FROM files WHERE state = 'embedded' AND label != '' "
            "AND sha256 IS NOT NULL"
        )
        return {row[0] for row in rows} - self.conflicting_hashes()

    def _require_model(self) -> str:
        if self.model_id is None:
            raise RuntimeError("adopt_model() must be called before embeddings are recorded")
        return self.model_id

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


_FILE_COLUMNS = "path, label, sha256, size, mtime_ns, state, reason"


def _file_record(row: tuple[Any, ...]) -> FileRecord:
    path, label, sha256, size, mtime_ns, state, reason = row
    return FileRecord(path, label, sha256, size, mtime_ns, FileState(state), reason)


def _upsert_file(
    db: sqlite3.Connection,
    path: str,
    label: str,
    sha256: str | None,
    size: int,
    mtime_ns: int,
    state: FileState,
    reason: str | None,
) -> None:
    now = time.time()
    forget_attempts(db, path)
    db.execute(
        "INSERT INTO files (path, label, sha256, size, mtime_ns, state, reason, first_seen, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
        "label = excluded.label, sha256 = excluded.sha256, size = excluded.size, "
        "mtime_ns = excluded.mtime_ns, state = excluded.state, reason = excluded.reason, "
        "updated_at = excluded.updated_at",
        (path, label, sha256, size, mtime_ns, state.value, reason, now, now),
    )


def _float32_blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
