"""`ecosight-daemon review ...` and `detect --review N`: the queue from the command line.

Decisions are written to the cache and their clips made here, whether or not a daemon
runs (SQLite takes one writer at a time; the clip names are the same whoever writes them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ecosight_daemon.config import Settings
from ecosight_daemon.detection.clock import iso_utc
from ecosight_daemon.detection.recording_run import RecordingResult
from ecosight_daemon.detection.scoring import Scoring
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.review.queue import ReviewQueue, ScoredRun, class_folders
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.digest import sha256_of

logger = logging.getLogger(__name__)


def open_queue(settings: Settings) -> tuple[Database, ReviewQueue]:
    store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
    return store, ReviewQueue(settings, store.review, lambda: class_folders(settings.paths.audio_dir))


def queue_listing(settings: Settings, everything: bool) -> dict[str, Any]:
    store, queue = open_queue(settings)
    try:
        status = queue.status()
        if everything:
            status["items"] = [queue.shown(item) for item in store.review.items(limit=100_000)]
        return status
    finally:
        store.close()


def decide(settings: Settings, item_id: int, reviewer: str, verdict: str, label: str | None) -> dict[str, Any]:
    store, queue = open_queue(settings)
    try:
        if verdict == "undo":
            return queue.undo(item_id, reviewer)
        return queue.decide(item_id, reviewer, verdict, label)
    finally:
        store.close()


class RunReviewer:
    """detect's `--review N`: up to N items queued, in all, from the recordings of one run."""

    def __init__(self, settings: Settings, budget: int) -> None:
        self._store, self._queue = open_queue(settings)
        self._left = budget
        self.queued: list[int] = []

    def __call__(self, result: RecordingResult, trace: WindowTrace, scoring: Scoring) -> None:
        if self._left <= 0:
            return
        path = Path(result.path).resolve()
        added = self._queue.fill(ScoredRun(path, path.name, sha256_of(path), iso_utc(result.clock.start_utc),
                                           result.events, trace, scoring.version), self._left)
        self._left -= len(added)
        self.queued.extend(added)

    def reserved_for_evaluation(self, recording: str) -> bool:
        return self._queue.reserved_for_evaluation(recording)

    def close(self) -> None:
        self._store.close()
