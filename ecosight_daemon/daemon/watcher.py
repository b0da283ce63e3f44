"""Filesystem events in, inbox commands out; and when a changed file is ready to read.

The watchdog handler runs on the observer's thread: it only puts a small command on
the daemon's inbox and returns (an exception there would kill the observer, and a slow
handler delays every later event).
"""

from __future__ import annotations

import logging
import os
import threading
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
from watchdog.observers.polling import PollingObserverVFS

from ecosight_daemon.audio import is_ignored_name
from ecosight_daemon.util.settling import Settling

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
    # Polling with lstat: a symbolic link to a folder is not a folder, so a link to ".." is
    # not walked into for ever (os.stat made the snapshot follow it: memory without bound).
    observer: BaseObserver = (PollingObserverVFS(os.lstat, os.scandir, polling_interval=poll_interval_s)
                              if polling else Observer())
    observer.name = "ecosight-observer"
    observer.schedule(EnqueueingHandler(put), str(audio_dir), recursive=True)
    try:
        observer.start()
    except BaseException:
        # Emitters already started (one per watched folder) would run on, unsupervised.
        try:
            observer.stop()
        except Exception:
            logger.debug("stopping the half-started observer failed", exc_info=True)
        raise
    return observer


_watchdog_thread_deaths: list[str] = []  # why each of watchdog's threads died, in order
_previous_excepthook = threading.excepthook


def _record_thread_death(args: threading.ExceptHookArgs) -> None:
    """Watchdog's threads (observer, emitters, the shared inotify reader) die silently
    on an exception; note it so the supervisor below finds out."""
    if args.thread is not None and type(args.thread).__module__.startswith("watchdog"):
        del _watchdog_thread_deaths[:-100]
        _watchdog_thread_deaths.append(f"{args.exc_type.__name__}: {str(args.exc_value)[:200]}")
    _previous_excepthook(args)


threading.excepthook = _record_thread_death


def _forget_dead_inotify_reader() -> None:
    """watchdog shares one inotify reader thread between observers and never replaces it
    once it died, so a restarted observer would wait on a dead thread forever."""
    try:
        from watchdog.observers.inotify_c import InotifyFD
    except ImportError:  # not on Linux
        return
    with InotifyFD._global_lock:
        if InotifyFD._instance is not None and not InotifyFD._instance.is_alive():
            InotifyFD._instance = None

class _OverflowListener(logging.Handler):
    """watchdog only logs a kernel inotify queue overflow (events were lost) and sends
    no event; this turns that log record into a rescan request, which the daemon
    coalesces with any other: one rescan per storm, not one per overflow."""

    def __init__(self, put: Callable[[FileEvent], None], audio_dir: Path) -> None:
        super().__init__(logging.WARNING)
        self._put, self._audio_dir = put, audio_dir

    def emit(self, record: logging.LogRecord) -> None:
        if "queue overflowed" in record.getMessage():
            self._put(FileEvent(str(self._audio_dir), rescan=True))


RESTART_WINDOW_S = 600.0  # a watcher that dies twice within this falls back to rescans


class SupervisedWatcher:
    """The watchdog observer, checked every loop turn and restarted when its threads die.

    Watchdog walks a new folder tree by recursion in its own threads, so a tree a few
    thousand folders deep kills them (RecursionError) and file events silently stop. A
    dead observer is restarted (with a rescan for what it missed); one that dies again
    within RESTART_WINDOW_S gives way to rescans every poll_interval_s, which use the
    daemon's own depth-limited walk, until inotify is tried again after that window.
    """

    def __init__(self, audio_dir: Path, put: Callable[[FileEvent], None], polling: bool,
                 poll_interval_s: float, clock: Callable[[], float]) -> None:
        self._start: Callable[[], BaseObserver] = lambda: start_observer(audio_dir, put, polling, poll_interval_s)
        self._overflow = _OverflowListener(put, audio_dir)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._observer: BaseObserver | None = None
        self._failures: list[float] = []
        self._deaths_seen = 0
        self._next_rescan = 0.0
        self._retry_at = 0.0
        self.problem: str | None = None

    @property
    def mode(self) -> str:
        return "rescans" if self._observer is None else "watching"

    def start(self) -> None:
        """Start watching. A watcher that cannot start (a tree deeper than watchdog's recursive
        start-up walk can go, the inotify watch limit) gives way to rescans, with the reason
        in the status: never a failed start, which systemd would repeat for ever."""
        self._try_again(self._clock())

    def _start_observer(self) -> None:
        self._deaths_seen = len(_watchdog_thread_deaths)
        watchdog_logger = logging.getLogger("watchdog.observers")
        if self._overflow not in watchdog_logger.handlers:
            watchdog_logger.addHandler(self._overflow)
        self._observer = self._start()

    def alive(self) -> bool:
        observer = self._observer
        return (observer is not None and len(_watchdog_thread_deaths) == self._deaths_seen
                and observer.is_alive() and all(e.is_alive() for e in observer.emitters))

    def check(self, now: float) -> bool:
        """Look after the observer; True when the caller should rescan audio_dir now."""
        if self._observer is None:
            if now >= self._retry_at:
                return self._try_again(now)
            if now >= self._next_rescan:
                self._next_rescan = now + self._poll_interval_s
                return True
            return False
        if self.alive():
            return False
        why = self._why_dead()
        self._failures = [t for t in self._failures if now - t < RESTART_WINDOW_S] + [now]
        self._shut(self._observer)
        self._observer = None
        if len(self._failures) >= 2:
            self.problem = (f"the file watcher failed again ({why}); rescanning every "
                            f"{self._poll_interval_s:g} s instead, trying the watcher again in "
                            f"{RESTART_WINDOW_S:.0f} s")
            logger.error("%s", self.problem)
            self._retry_at = now + RESTART_WINDOW_S
            self._next_rescan = now + self._poll_interval_s
            return True
        logger.error("the file watcher stopped (%s); restarting it and rescanning", why)
        return self._try_again(now)

    def _try_again(self, now: float) -> bool:
        _forget_dead_inotify_reader()
        try:
            self._start_observer()
        except Exception as exc:  # RecursionError in a deep tree, the inotify watch limit, a vanished folder...
            self._observer = None
            self._retry_at = now + RESTART_WINDOW_S
            self.problem = (f"cannot start the file watcher ({type(exc).__name__}: {exc}); rescanning every "
                            f"{self._poll_interval_s:g} s instead")
            logger.error("%s", self.problem)
            return True
        if self.problem is not None:
            logger.info("the file watcher runs again")
        self.problem = None
        return True

    def _why_dead(self) -> str:
        deaths = _watchdog_thread_deaths[self._deaths_seen:] if len(_watchdog_thread_deaths) > self._deaths_seen else []
        return deaths[-1] if deaths else "its thread ended"

    @staticmethod
    def _shut(observer: BaseObserver) -> None:
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception:  # a half-dead observer may fail to stop cleanly; it is dropped either way
            logger.debug("stopping the dead observer failed", exc_info=True)

    def stop(self, timeout: float = 5.0) -> None:
        logging.getLogger("watchdog.observers").removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=timeout)


class SettleTracker:
    """Paths that changed; a path is due once it has settled (util/settling.py), or at once
    when it was closed after writing or moved in."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._settling: Settling[Path] = Settling(settle_s)
        self._ready: set[Path] = set()

    def __len__(self) -> int:
        return len(self._settling) + len(self._ready)

    def changed(self, path: Path, now: float, ready: bool = False) -> None:
        """Note an event for path; `ready` when it was closed after writing or moved in."""
        if is_ignored_name(path.name):
            return
        stat = None if ready else _stat(path)
        if not ready and stat is not None and self._settling.observe(path, stat[0], stat[1], now):
            ready = True
        if ready:
            self._ready.add(path)
            self._settling.forget(path)
            return
        if stat is None:
            self._settling.forget(path)

    def forget(self, path: Path) -> None:
        self._settling.forget(path)
        self._ready.discard(path)

    def due(self, now: float) -> list[Path]:
        """Paths to process now: ready ones, and those that have settled (or are gone)."""
        due = sorted(self._ready)
        self._ready.clear()
        for path in self._settling:
            stat = _stat(path)
            if stat is None or self._settling.observe(path, stat[0], stat[1], now):
                self._settling.forget(path)
                due.append(path)  # settled, or gone: let the index forget it
        return due


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns
