"""Pending files to committed cache rows: read, hash and decode on a worker thread
while the current file runs through the model (or, for an embedder that can run
several files at once, each worker takes a file from its bytes to its embeddings);
every database write stays on the caller's thread, one transaction per file.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from ecosight_daemon.audio import DecodedAudio, decode_audio
from ecosight_daemon.cache.store import EmbeddingStore, FileRecord, FileState
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.ingest.naming import FoundFile, describe_entry, shown
from ecosight_daemon.ingest.reconcile import IngestLimits, record_failure, size_problem
from ecosight_daemon.util import pause
from ecosight_daemon.util.digest import sha256_of_bytes

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class EmbedReport:
    embedded: int = 0
    failed: int = 0
    skipped: int = 0  # bytes already cached (a rename, a copy, or a re-run)
    deferred: int = 0  # changed while being read; still pending
    patches: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    embed_seconds: list[float] = field(default_factory=list)  # the model's time per embedded file


@dataclass(frozen=True)
class PreparedFile:
    """What the worker thread learned about one pending file."""

    record: FileRecord
    found: FoundFile | None = None  # None: the file is gone
    sha256: str | None = None
    audio: DecodedAudio | None = None
    problem: str | None = None
    changed_while_reading: bool = False


@runtime_checkable
class ConcurrentFiles(Protocol):
    """An embedder whose fastest use is several files at once, one thread each (the ONNX
    runtime: one single-threaded run per core beats one run over every core, which
    stalls whenever decoding takes a core from it)."""

    def for_concurrent_files(self) -> tuple[Embedder, int]:
        """An embedder safe to call from several threads at once, and how many to use."""
        ...


def prepare_file(audio_dir: Path, record: FileRecord, limits: IngestLimits, cached: set[str]) -> PreparedFile:
    """Read, hash and (unless cached) decode one file: everything but the model and the database."""
    path = audio_dir / record.path
    found = describe_entry(path, record.path)
    if found is None:
        return PreparedFile(record)
    problem = found.problem or size_problem(found.size, limits.max_file_bytes)
    if problem:
        return PreparedFile(record, found, problem=problem)
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        return PreparedFile(record)
    except OSError as exc:
        return PreparedFile(record, found, problem=f"cannot read file ({exc.strerror or exc})")
    after = describe_entry(path, record.path)
    if after is None or (after.size, after.mtime_ns) != (found.size, found.mtime_ns) or (
        len(data) != found.size
    ):
        return PreparedFile(record, after, changed_while_reading=True)
    sha256 = sha256_of_bytes(data)
    if sha256 in cached:
        return PreparedFile(record, found, sha256)
    try:
        audio = decode_audio(data, limits.max_duration_s, limits.min_duration_s, limits.min_peak_dbfs)
    except AudioDecodeError as exc:
        return PreparedFile(record, found, sha256, problem=str(exc))
    return PreparedFile(record, found, sha256, audio)


def read_regular_file(path: Path) -> bytes:
    """Read a file's bytes without blocking on a FIFO swapped in after the lstat."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        return handle.read()


def embed_waveform(embedder: Embedder, waveform: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Per-patch embeddings of one clip, or the reason there are none."""
    try:
        embeddings = embedder.embed(waveform)
    except Exception as exc:  # a model error on one file must not stop the others
        logger.exception("the embedding model failed")
        return None, f"embedding model failed ({type(exc).__name__})"
    if not np.isfinite(embeddings).all():
        return None, "embedding model returned NaN or Inf"
    return embeddings, None


@dataclass(frozen=True)
class EmbeddedFile:
    """The embed step's result for one work unit, before anything is written."""

    prepared: PreparedFile
    embeddings: np.ndarray | None = None
    problem: str | None = None
    seconds: float = 0.0
    duration_s: float = 0.0  # of the decoded clip


def embed_prepared(embedder: Embedder, prepared: PreparedFile) -> EmbeddedFile:
    if prepared.audio is None:
        return EmbeddedFile(prepared)
    started = time.monotonic()
    embeddings, problem = embed_waveform(embedder, prepared.audio.waveform)
    # The waveform is let go: a finished result may wait in line behind slower files.
    return EmbeddedFile(replace(prepared, audio=None), embeddings, problem, time.monotonic() - started,
                        prepared.audio.duration_s)


def embed_pending(
    store: EmbeddingStore,
    embedder: Embedder,
    audio_dir: Path,
    limits: IngestLimits,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    limit: int | None = None,
    time_budget_s: float | None = None,
    cached: set[str] | None = None,
) -> EmbedReport:
    """Embed pending files (at most `limit`; once `time_budget_s` is spent no new file
    starts, those already started are finished), one committed transaction each; bad
    files become failed. `cached`: the hashes known to be cached (read from the store when
    not given; a caller embedding in batches keeps one set, which this extends)."""
    started = time.monotonic()
    report = EmbedReport()
    pending = store.files(FileState.PENDING, limit)
    cached = store.cached_hashes() if cached is None else cached
    total = len(pending)

    def out_of_time() -> bool:
        return time_budget_s is not None and time.monotonic() - started >= time_budget_s

    for done, result in enumerate(embedded_files(embedder, audio_dir, limits, cached, pending, out_of_time), start=1):
        in_cache = record_result(store, result, report)
        if result.prepared.sha256:  # the set kept in step (bytes gone since are decoded next time)
            (cached.add if in_cache else cached.discard)(result.prepared.sha256)
        if progress:
            progress(done, total)
        if should_stop():
            logger.info("stopping after %d of %d pending files", done, total)
            break
    report.seconds = time.monotonic() - started
    return report


def embedded_files(embedder: Embedder, audio_dir: Path, limits: IngestLimits, cached: set[str],
                   pending: list[FileRecord], out_of_time: Callable[[], bool]) -> Iterator[EmbeddedFile]:
    """The pending files embedded, in order, computed ahead on worker threads."""
    if isinstance(embedder, ConcurrentFiles):
        shared, workers = embedder.for_concurrent_files()
        # Results are taken in order: with only one file queued per worker, a worker that
        # finished its short clips sat idle behind a long one (a quarter of 2 cores, measured).
        return prefetched(lambda r: embed_prepared(shared, prepare_file(audio_dir, r, limits, cached)),
                          pending, workers=workers, ahead=4 * workers, draining=out_of_time)
    prepared = prefetched(lambda r: prepare_file(audio_dir, r, limits, cached), pending, draining=out_of_time)
    return (embed_prepared(embedder, file) for file in prepared)


def record_result(store: EmbeddingStore, result: EmbeddedFile, report: EmbedReport) -> bool:
    """Write one embed step's result: embedded, already cached, failed, deferred or gone.
    True when the file's embeddings are in the cache now."""
    prepared = result.prepared
    record, found = prepared.record, prepared.found
    if found is None:
        store.forget_files([record.path])
        logger.info("removed %s from the corpus (file deleted)", shown(record.path))
        return False
    if prepared.changed_while_reading:
        report.deferred += 1
        logger.info("deferred %s: it changed while being read (still being written?)", shown(record.path))
        return False
    problem = prepared.problem or result.problem
    if problem is not None:
        record_failure(store, found, prepared.sha256, problem)
        report.failed += 1
        report.failures.append((found.relpath, problem))
        return False
    assert prepared.sha256 is not None  # set whenever there is no problem
    if store.has_embedding(prepared.sha256):
        store.note_file(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256)
        report.skipped += 1
        logger.debug("cached %s (same bytes embedded before)", shown(found.relpath))
        return True
    if result.embeddings is None:
        # Cached when the worker looked, gone from the cache since: embed it next pass.
        report.deferred += 1
        return False
    pause.point("embedding")
    store.record_embedding(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256,
                           result.embeddings, result.duration_s)
    report.embedded += 1
    report.patches += result.embeddings.shape[0]
    report.embed_seconds.append(result.seconds)
    logger.info("embedded %s (%d patches, %.1f s of audio) in %.2f s", shown(found.relpath),
                result.embeddings.shape[0], result.duration_s, result.seconds)
    return True


T = TypeVar("T")
R = TypeVar("R")


def prefetched(work: Callable[[T], R], items: Iterable[T], workers: int = 1, ahead: int = 2,
               draining: Callable[[], bool] = lambda: False) -> Iterator[R]:
    """Yield work(item) in order, computing up to `ahead` items ahead on `workers`
    threads. Once `draining()` is true no new item starts; those started are still yielded
    (work thrown away at the end of every batch cost the daemon's bursts a few percent)."""
    source = iter(items)
    depth = max(ahead, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecosight-prefetch") as pool:
        queue: deque[Future[R]] = deque(pool.submit(work, item) for _, item in zip(range(depth), source, strict=False))
        try:
            while queue:
                result = queue.popleft().result()
                upcoming = None if draining() else next(source, None)
                if upcoming is not None:
                    queue.append(pool.submit(work, upcoming))
                yield result
        finally:
            for future in queue:
                future.cancel()
