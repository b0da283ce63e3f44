"""Filesystem events in, inbox commands out; and when a changed file is ready to read.

The watchdog handler runs on the observer's thread: it only puts a small command on
the daemon's inbox and returns (an exception there would kill the observer, and a slow
handler delays every later event).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .audio import is_ignored_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEvent:
    """A path under audio_dir that changed; `ready` when closed after writing or moved in."""

    path: str
    ready: bool = False
    deleted: bool = False
    rescan: bool = False  # a folder appeared, moved or vanished: look at the whole tree


class EnqueueingHandler(FileSystemEventHandler):
    def __init__(self, put: Callable[[FileEvent], None]) -> None:
        super().__init__()
        self._put = put

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            for item in translate(event):
                self._put(item)
        except Exception:  # never let one odd event kill the observer thread
            logger.exception("could not queue filesystem event %r", event)


def translate(event: FileSystemEvent) -> list[FileEvent]:
    source = os.fsdecode(event.src_path)
    if isinstance(event, (DirCreatedEvent, DirDeletedEvent, DirMovedEvent)):
        return [FileEvent(source, rescan=True)]
    if isinstance(event, FileMovedEvent):
        destination = os.fsdecode(event.dest_path)
        return [FileEvent(source, deleted=True), FileEvent(destination, ready=True)]
    if isinstance(event, FileDeletedEvent):
        return [FileEvent(source, deleted=True)]
    if isinstance(event, FileClosedEvent):
        return [FileEvent(source, ready=True)]
    if isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
        return [FileEvent(source)]
    return []  # opened, closed without writing


def start_observer(audio_dir: Path, put: Callable[[FileEvent], None], polling: bool,
                   poll_interval_s: float) -> BaseObserver:
    observer: BaseObserver = PollingObserver(timeout=poll_interval_s) if polling else Observer()
    observer.name = "ecosight-observer"
    observer.schedule(EnqueueingHandler(put), str(audio_dir), recursive=True)
    observer.start()
    return observer


@dataclass
class _Watched:
    size: int
    mtime_ns: int
    stable_since: float


class SettleTracker:
    """Paths that changed; a path is due once its size and mtime held still for settle_s."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._watched: dict[Path, _Watched] = {}
        self._ready: set[Path] = set()

    def __len__(self) -> int:
        return len(self._watched) + len(self._ready)

    def changed(self, path: Path, now: float, ready: bool = False) -> None:
        """Note an event for path; `ready` when it was closed after writing or moved in.

        A file whose modification time is already settle_s old is ready too: that is a
        file moved in from outside the watched tree (inotify reports it as created),
        since every write moves the mtime to the present.
        """
        if is_ignored_name(path.name):
            return
        stat = None if ready else _stat(path)
        if not ready and stat is not None and time.time() - stat[1] / 1e9 >= self.settle_s:
            ready = True
        if ready:
            self._ready.add(path)
            self._watched.pop(path, None)
            return
        if stat is None:
            self._watched.pop(path, None)
            return
        self._watched[path] = _Watched(stat[0], stat[1], now)

    def forget(self, path: Path) -> None:
        self._watched.pop(path, None)
        self._ready.discard(path)

    def due(self, now: float) -> list[Path]:
        """Paths to process now: ready ones, and those unchanged for settle_s."""
        due = sorted(self._ready)
        self._ready.clear()
        for path, watched in list(self._watched.items()):
            stat = _stat(path)
            if stat is None:
                del self._watched[path]
                due.append(path)  # gone: let the index forget it
            elif stat != (watched.size, watched.mtime_ns):
                self._watched[path] = _Watched(stat[0], stat[1], now)
            elif now - watched.stable_since >= self.settle_s:
                del self._watched[path]
                due.append(path)
        return due


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns
