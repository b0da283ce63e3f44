"""The daemon's inbox: the one way other threads talk to the main loop.

Producers (signal handlers, the watchdog observer, APScheduler, the retrain runner)
only put a message here and return. Each message is its own type; the main thread
drains them in batches. File events are bounded: past FILE_EVENT_LIMIT they are
dropped and one rescan of the whole tree replaces them, so a burst of any size costs
bounded memory.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ecosight_daemon.daemon.watcher import FileEvent
from ecosight_daemon.versions.retraining_log import RetrainOutcome

FILE_EVENT_LIMIT = 10_000  # file events waiting in the inbox at most


@dataclass(frozen=True)
class FileChanged:
    event: FileEvent


@dataclass(frozen=True)
class Rescan:
    reason: str


@dataclass(frozen=True)
class RetrainRequested:
    reason: str


@dataclass(frozen=True)
class ReloadConfig:
    """SIGHUP: read config.toml again, then retrain."""


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass(frozen=True)
class RetrainFinished:
    outcome: RetrainOutcome


@dataclass(frozen=True)
class Rollback:
    """Make an earlier version current (None: the one promoted before the current)."""

    version: str | None
    reply: Future[dict[str, Any]]


@dataclass(frozen=True)
class ReviewDecision:
    """A reviewer's decision on a review item (verdict "undo": their latest one undone)."""

    item_id: int
    reviewer: str
    verdict: str
    label: str | None
    reply: Future[dict[str, Any]]


Message = FileChanged | Rescan | RetrainRequested | ReloadConfig | Stop | RetrainFinished | Rollback | ReviewDecision


class Inbox:
    def __init__(self, file_event_limit: int = FILE_EVENT_LIMIT) -> None:
        self.file_event_limit = file_event_limit
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._file_events = 0
        self._file_events_peak = 0
        self._overflowed = False

    def put(self, message: Message) -> None:
        self._queue.put(message)

    def put_file_event(self, event: FileEvent) -> None:
        with self._lock:
            if self._file_events >= self.file_event_limit:
                if not self._overflowed:
                    self._overflowed = True
                    self._queue.put(Rescan(f"more than {self.file_event_limit} file events queued"))
                return
            self._file_events += 1
            self._file_events_peak = max(self._file_events_peak, self._file_events)
        self._queue.put(FileChanged(event))

    def drain(self, timeout: float) -> list[Message]:
        """Everything queued, waiting up to `timeout` for the first message."""
        try:
            messages = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._file_events -= sum(1 for m in messages if isinstance(m, FileChanged))
            if any(isinstance(m, Rescan) for m in messages):
                self._overflowed = False
        return messages

    def empty(self) -> bool:
        return self._queue.empty()

    def status_fields(self) -> dict[str, int]:
        return {
            "queued_file_events": self._file_events,
            "queued_file_events_peak": self._file_events_peak,
            "queued_file_events_limit": self.file_event_limit,
        }
