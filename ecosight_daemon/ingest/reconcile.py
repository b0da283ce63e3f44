"""The index in step with the folder: new, changed and deleted files become rows
(pending, or failed with a reason); nothing is decoded or embedded here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ecosight_daemon.audio import is_audio_name, is_ignored_name
from ecosight_daemon.ingest.limits import IngestLimits, shortage, size_problem
from ecosight_daemon.ingest.naming import FoundFile, describe_entry, index_path, shown, walk_audio_dir
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.digest import sha256_of

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


def reconcile(
    store: Database, audio_dir: Path, limits: IngestLimits, hash_files: bool = False
) -> ReconcileReport:
    """Bring the index in line with the folder: new, changed and deleted files.

    With hash_files, new and changed files are hashed now, so renames and label
    conflicts show at once; otherwise hashing waits for `embed_pending`.
    """
    report = ReconcileReport()
    if not audio_dir.is_dir():
        # An unmounted share or a mistyped path must not make the index forget everything.
        logger.error("audio folder %s is missing; not reconciling until it is back", audio_dir)
        return report
    seen: set[str] = set()
    for found in walk_audio_dir(audio_dir, limits.extensions):
        seen.add(found.relpath)
        record = store.clips.file_record(found.relpath)
        is_same = record is not None and record.matches(found.size, found.mtime_ns) and (
            record.label == found.label
        )
        needs_hash = hash_files and record is not None and record.sha256 is None and (
            record.state is FileState.PENDING
        )
        if is_same and not needs_hash:
            report.unchanged += 1
            continue
        if record is None:
            report.new += 1
        elif not is_same:
            report.changed += 1
        note_found_file(store, audio_dir, found, limits, hash_files)
    missing = [record.path for record in store.clips.files() if record.path not in seen]
    if missing:
        report.removed = store.clips.forget_files(missing)
        for path in missing:
            logger.info("removed %s from the corpus (file deleted)", shown(path))
    return report


def refresh_path(store: Database, audio_dir: Path, path: Path, limits: IngestLimits) -> bool:
    """Bring the index in line for one path an event named; True if the index changed."""
    try:
        relpath, name_problem = index_path(path, audio_dir)
    except ValueError:
        return False
    if any(is_ignored_name(part) for part in relpath.split("/")) or not is_audio_name(path.name, limits.extensions):
        return False
    found = describe_entry(path, relpath, name_problem)
    record = store.clips.file_record(relpath)
    if found is None:
        if record is not None:
            store.clips.forget_files([relpath])
            logger.info("removed %s from the corpus (file deleted)", shown(relpath))
        return record is not None
    if record is not None and record.matches(found.size, found.mtime_ns) and record.label == found.label:
        return False
    note_found_file(store, audio_dir, found, limits, hash_file=False)
    return True


def note_found_file(
    store: Database, audio_dir: Path, found: FoundFile, limits: IngestLimits, hash_file: bool
) -> None:
    """Index one new or changed file as pending (or failed, or already embedded)."""
    problem = found.problem or size_problem(found.size, limits.max_file_bytes)
    sha256 = None
    if problem is None and hash_file:
        try:
            sha256 = sha256_of(audio_dir / found.relpath)
        except OSError as exc:
            if shortage(exc) is None:  # out of descriptors: indexed pending, hashed when it is embedded
                problem = f"cannot read file ({exc.strerror or exc})"
    if problem is not None:
        record_failure(store, found, None, problem)
        return
    store.clips.note_file(found.relpath, found.label, found.size, found.mtime_ns, sha256)


def record_failure(store: Database, found: FoundFile, sha256: str | None, reason: str) -> None:
    """Index a file as failed, with the reason an operator reads in `scan` and the log."""
    store.clips.record_failure(found.relpath, found.label, found.size, found.mtime_ns, sha256, reason)
    logger.warning("failed %s: %s", shown(found.relpath), reason)
