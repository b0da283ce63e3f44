"""Opening the cache: the connection's settings and the schema as numbered migrations. A new
cache runs them all, an older one runs those past its recorded version, each in the same
transaction as its version bump. A change to the schema is a new entry here, never an edit
of an old one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ecosight_daemon.errors import CacheError
from ecosight_daemon.util.durable import free_space

logger = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    first_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL REFERENCES models(model_id),
    patches INTEGER NOT NULL CHECK (patches > 0),
    dim INTEGER NOT NULL CHECK (dim > 0),
    dtype TEXT NOT NULL CHECK (dtype IN ('float16', 'float32')),
    data BLOB NOT NULL,
    duration_s REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sha256, model_id)
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'embedded', 'failed')),
    reason TEXT,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_splits (
    group_key TEXT PRIMARY KEY,
    split TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')),
    assigned_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files(sha256);
CREATE INDEX IF NOT EXISTS files_by_state ON files(state);
"""),
    (2, """
CREATE TABLE IF NOT EXISTS audioset_heads (
    model_id TEXT PRIMARY KEY REFERENCES models(model_id),
    kernel BLOB NOT NULL,
    bias BLOB NOT NULL
);
"""),
    # Covering indexes for the queries run every few seconds over the whole index: label
    # conflicts (sha256, label) and training samples (state, sha256, label). IF EXISTS:
    # some version-2 caches got these before this migration had its own number.
    (3, """
DROP INDEX IF EXISTS files_by_sha256;
DROP INDEX IF EXISTS files_by_state;
CREATE INDEX IF NOT EXISTS files_by_sha256_label ON files(sha256, label);
CREATE INDEX IF NOT EXISTS files_by_state_sha256_label ON files(state, sha256, label);
"""),
    (4, """
CREATE TABLE IF NOT EXISTS decode_attempts (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    last_at REAL NOT NULL
);
"""),
    # Long field recordings (the detection room): one row per recording file, the patch
    # embeddings and onset features of its chunks keyed by content and embedding model (a
    # new classifier re-scores from them), and the events the current version found.
    (5, """
CREATE TABLE IF NOT EXISTS recordings (
    path TEXT PRIMARY KEY,
    sha256 TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'detecting', 'done', 'failed')),
    reason TEXT,
    truncated TEXT,
    start_utc TEXT,
    clock_source TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    model_version TEXT,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recording_chunks (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    first_patch INTEGER NOT NULL CHECK (first_patch >= 0),
    patches INTEGER NOT NULL CHECK (patches >= 0),
    dtype TEXT NOT NULL CHECK (dtype IN ('float16', 'float32')),
    embeddings BLOB NOT NULL,
    onsets BLOB NOT NULL,
    PRIMARY KEY (sha256, model_id, first_patch)
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL REFERENCES recordings(path) ON DELETE CASCADE,
    label TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    peak_s REAL NOT NULL,
    score REAL NOT NULL,
    model_version TEXT NOT NULL,
    found_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS detections_by_path ON detections(path);
"""),
    # The review queue: stretches of recordings chosen for a person to label, each
    # person's decisions (undone ones kept), and the training clip an agreed item became.
    (6, """
CREATE TABLE IF NOT EXISTS review_items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    recording TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    centre_s REAL NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    clock_utc TEXT,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    model_version TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('top', 'near_threshold', 'below_threshold')),
    minute INTEGER NOT NULL,
    round INTEGER NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'agreed', 'uncertain', 'disagreed')),
    agreed_label TEXT,
    clip TEXT,
    exported_at REAL,
    created_at REAL NOT NULL,
    UNIQUE (sha256, label, minute)
);
CREATE TABLE IF NOT EXISTS review_decisions (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES review_items(id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('label', 'uncertain', 'skip')),
    label TEXT,
    decided_at REAL NOT NULL,
    undone_at REAL
);
CREATE INDEX IF NOT EXISTS review_decisions_by_item ON review_decisions(item_id);
"""),
    # A recording's clock problems (implausible or disagreeing sources), how many of its
    # turns began without ending (the daemon killed while reading it), and the alerts sent,
    # by content: a recording moved or copied under another name is not alerted again.
    (7, """
ALTER TABLE recordings ADD COLUMN clock_note TEXT;
ALTER TABLE recordings ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS alerts_sent (
    sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (sha256, label, start_ms)
);
"""),
    # One decision per reviewer and item, replaced in place: a reviewer repeating or changing
    # a decision no longer adds a row (the latest of their earlier rows is the one kept).
    (8, """
DELETE FROM review_decisions WHERE id NOT IN (SELECT MAX(id) FROM review_decisions GROUP BY item_id, reviewer);
CREATE UNIQUE INDEX IF NOT EXISTS review_decisions_one_per_reviewer ON review_decisions(item_id, reviewer);
"""),
    # What each analysed recording's patches scored under a version, counted per class (the
    # site's own background, learned without review): rebuilt by any re-score.
    (9, """
CREATE TABLE IF NOT EXISTS site_scores (
    path TEXT PRIMARY KEY REFERENCES recordings(path) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    recorder TEXT NOT NULL,
    model_version TEXT NOT NULL,
    seconds REAL NOT NULL,
    classes INTEGER NOT NULL CHECK (classes > 0),
    histogram BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS site_scores_by_recorder ON site_scores(recorder, model_version);
"""),
    # Each cached patch's shot-CNN input (int8 codes, artifacts/shot_spectrogram.py), so a
    # version whose detector reads them re-scores from the cache too. Chunks cached before
    # lack them: they are dropped and their recordings read once more (detections kept
    # until then; alerts already sent are not sent again).
    (10, """
ALTER TABLE recording_chunks ADD COLUMN spectrograms BLOB;
DELETE FROM recording_chunks;
UPDATE recordings SET state = 'pending', attempts = 0 WHERE state IN ('done', 'detecting');
"""),
    # Site histograms count each alarm once, at its loudest patch. Rows counted per patch (an
    # alarm 2-3 times) are kept but no longer pooled: the site learns again as its recordings
    # are scored (every one is re-scored when a new version is promoted).
    (11, """
ALTER TABLE site_scores ADD COLUMN counted TEXT NOT NULL DEFAULT 'patches';
"""),
    # How many seconds of its site's other audio a recording's thresholds were learned from
    # when it was scored (0: none), so it is scored again as its site learns more. Rows
    # from before count as 0: recordings of a site that has learned are re-scored once.
    (12, """
ALTER TABLE site_scores ADD COLUMN learned_from_s REAL NOT NULL DEFAULT 0;
"""),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def configure(connection: sqlite3.Connection, in_memory: bool) -> None:
    # Per-connection settings: they are not stored in the file, so set them on every open.
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 10000")
    if not in_memory:
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash; a power cut may lose the last
        # commits but never corrupts, and a lost embedding is simply recomputed.
        connection.execute("PRAGMA synchronous = NORMAL")


def recorded_version(connection: sqlite3.Connection) -> int:
    """0 for a new database."""
    has_meta = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def ensure_schema(connection: sqlite3.Connection) -> int:
    """Run the migrations the database lacks; its schema version afterwards (a version
    newer than this program's is returned untouched, for the caller to refuse)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        before = version = recorded_version(connection)
        for number, statements in MIGRATIONS:
            if number <= version:
                continue
            for statement in filter(str.strip, statements.split(";")):
                _run_statement(connection, statement)
            connection.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(number),))
            version = number
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    if 0 < before < version:
        logger.info("embedding cache schema upgraded from version %d to %d", before, version)
    return version


def _run_statement(connection: sqlite3.Connection, statement: str) -> None:
    """One migration statement; like CREATE ... IF NOT EXISTS, an added column that is already
    there is no error (SQLite has no ADD COLUMN IF NOT EXISTS), so every migration can re-run."""
    try:
        connection.execute(statement)
    except sqlite3.OperationalError as exc:
        if not ("ADD COLUMN" in statement.upper() and "duplicate column name" in str(exc)):
            raise


def connect(path: Path | str) -> sqlite3.Connection:
    """A configured connection to a cache at the current schema; CacheError says what to do."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
        configure(connection, in_memory=str(path) == ":memory:")
        version = ensure_schema(connection)
    except sqlite3.OperationalError as exc:  # disk full, I/O error, permissions: not the file's fault
        raise CacheError(
            f"cannot open embedding cache {path}: {exc} ({free_space(Path(path).parent)} free on its "
            "disk); check free space and permissions, then retry. The cache file is left as it is"
        ) from exc
    except sqlite3.DatabaseError as exc:  # not a database, malformed
        raise CacheError(
            f"cannot open embedding cache {path}: {exc}. Recover with: "
            f"mv '{path}' '{path}.corrupt' && rm -f '{path}-wal' '{path}-shm' ; then start again: "
            "the cache is rebuilt (every file is embedded again) and models/ is untouched"
        ) from exc
    if version > SCHEMA_VERSION:
        connection.close()
        raise CacheError(
            f"embedding cache {path} has schema version {version}, newer than this "
            f"program's {SCHEMA_VERSION}; upgrade ecosight-daemon or use another cache_path"
        )
    return connection
