"""The daemon's side of the recording reader (reader_child.py): every read of a recording
(header, hash, blocks, snippets, review clips) is a request with a wall-clock budget to a
process that can be killed. A request past its budget kills the child and fails with
`ReadTimedOut` (an AudioDecodeError: the file is to blame); a child that dies is
`ReaderInterrupted` (the file is tried again, a bounded number of times).

Each request is a generator that yields while the answer is not in, so the main loop goes
on answering signals and status between polls; `finish()` drives one to its end where
blocking is fine (the CLI, an HTTP thread).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ecosight_daemon.detection.clock import ClockEvidence
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.util.child_channel import ChildChannel, Exchange, Received

POLL_S = 0.1  # the longest a loop step waits for an answer before yielding
SEND_S = 0.001  # what `read_ahead` waits: enough to send its request, not to wait for the answer
SNIPPET_BUDGET_S = 10.0  # a few seconds cut for a page or a review clip
T = TypeVar("T")
Waiting = Generator[None, None, T]


class ReadTimedOut(AudioDecodeError):
    """The reader took longer than its budget on this file and was stopped."""


class ReaderInterrupted(Exception):
    """The reader process died (a crash, an OOM kill): not provably the file's fault."""


@dataclass(frozen=True)
class Probe:
    sample_rate: int
    channels: int
    frames: int
    declared_s: float | None
    clock: ClockEvidence


def finish(waiting: Waiting[T]) -> T:
    """Drive a request to its answer, blocking."""
    while True:
        try:
            next(waiting)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def answered(value: T) -> Waiting[T]:
    """A request whose answer is already in."""
    yield from ()
    return value


class RecordingReader:
    """One reader process, for one thread at a time; `budget_s` is each request's wall-clock limit."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._channel = ChildChannel("ecosight_daemon.detection.reader_child")
        self._under_way: Exchange | None = None  # the last request sent

    def probe(self, path: Path) -> Waiting[Probe]:
        header, _ = yield from self._ask({"op": "probe", "path": str(path)}, path)
        return Probe(int(header["rate"]), int(header["channels"]), int(header["frames"]),
                     None if header.get("declared_s") is None else float(header["declared_s"]),
                     ClockEvidence.from_json(header.get("clock")))

    def sha256(self, path: Path) -> Waiting[str]:
        offset = 0
        while True:
            header, _ = yield from self._ask({"op": "hash", "path": str(path), "offset": offset}, path)
            if header.get("restart"):  # a new reader process lost the running digest
                offset = 0
                continue
            if "sha256" in header:
                return str(header["sha256"])
            offset = int(header["offset"])
            yield

    def read(self, path: Path, start_frame: int, frames: int) -> Waiting[np.ndarray]:
        """Up to `frames` frames from `start_frame`, down-mixed, at the file's own rate."""
        return self._read(path, start_frame, frames, POLL_S)

    def read_ahead(self, path: Path, start_frame: int, frames: int) -> Waiting[np.ndarray]:
        """`read` with its request sent now, so the child reads while the caller works on the
        block before (detection waited ~10% of its time on reads)."""
        waiting = self._read(path, start_frame, frames, SEND_S)
        try:
            next(waiting)
        except StopIteration as done:
            return answered(done.value)
        return waiting

    def _read(self, path: Path, start_frame: int, frames: int, first_wait_s: float) -> Waiting[np.ndarray]:
        request = {"op": "read", "path": str(path), "start_frame": start_frame, "frames": frames}
        header, data = yield from self._ask(request, path, first_wait_s)
        if header.get("dtype") == "int16":
            return as_float(np.frombuffer(data, dtype=np.int16))
        return np.frombuffer(data, dtype=np.float32)

    def cut(self, path: Path, centre_s: float, seconds: float) -> Waiting[np.ndarray]:
        """16 kHz mono samples of `seconds` around `centre_s` (clipped to the file)."""
        request = {"op": "cut", "path": str(path), "centre_s": centre_s, "seconds": seconds}
        _, data = yield from self._ask(request, path)
        return np.frombuffer(data, dtype=np.float32)

    def kill(self) -> None:
        """From any thread (shutting down): a request under way ends with ReaderInterrupted."""
        self._channel.kill()

    def close(self) -> None:
        self._channel.stop()

    @property
    def pid(self) -> int | None:
        return self._channel.pid

    def _ask(self, request: dict[str, Any], path: Path, first_wait_s: float = POLL_S) -> Waiting[Received]:
        yield from self._drop_unread_answer()
        try:
            exchange = self._under_way = self._channel.begin(request, self.budget_s)
            wait_s = first_wait_s
            while not exchange.advance(wait_s):
                wait_s = POLL_S
                yield
        except TimeoutError:
            self._under_way = None
            self._channel.stop()
            raise ReadTimedOut(
                f"reading {path.name} ({request['op']}) took longer than {self.budget_s:g} s and was stopped; the "
                "file may be damaged (re-export it) or the machine overloaded (raise [audio] max_decode_s)") from None
        except EOFError:
            self._under_way = None
            raise ReaderInterrupted(f"the recording reader {self._channel.ended_how()}") from None
        header, data = exchange.answer
        if "error" in header:
            raise AudioDecodeError(str(header["error"]))
        return header, data

    def _drop_unread_answer(self) -> Waiting[None]:
        """The answer to a request whose caller went away (a stream dropped part-way with its
        next block asked for) is waited for and dropped, or it would be taken for the next
        request's; the child is stopped if it does not come in time."""
        stale, self._under_way = self._under_way, None
        if stale is None or stale.done:
            return
        try:
            while not stale.advance(POLL_S):
                yield
        except (TimeoutError, EOFError, OSError, ValueError):  # late, the child gone, or its pipes closed
            self._channel.stop()


def as_float(samples: np.ndarray) -> np.ndarray:
    """16-bit samples as libsndfile gives them in float32: scaled by 1/32768, which is exact."""
    scaled: np.ndarray = samples.astype(np.float32)
    scaled *= np.float32(1 / 32768)
    return scaled


class SharedCutter:
    """Short cuts (snippets for the pages, review clips) through one reader shared by threads;
    a thread that cannot have it within the budget is told the reader is busy."""

    def __init__(self, budget_s: float = SNIPPET_BUDGET_S) -> None:
        self._reader = RecordingReader(budget_s)
        self._lock = threading.Lock()

    def cut(self, path: Path, centre_s: float, seconds: float) -> np.ndarray:
        """AudioDecodeError (the file) or ReaderInterrupted/TimeoutError (busy, try again)."""
        if not self._lock.acquire(timeout=self._reader.budget_s):
            raise TimeoutError("the recording reader is busy; try again in a moment")
        try:
            return finish(self._reader.cut(path, centre_s, seconds))
        finally:
            self._lock.release()

    def close(self) -> None:
        self._reader.kill()
        with self._lock:
            self._reader.close()


_shared: SharedCutter | None = None
_shared_lock = threading.Lock()


def shared_cutter() -> SharedCutter:
    """The process's one cutter, made on first use (its reader process starts with the first cut)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SharedCutter()
        return _shared


def close_shared_cutter() -> None:
    with _shared_lock:
        cutter = _shared
    if cutter is not None:
        cutter.close()

