"""The steps one pending file goes through, shared by the CLI's one-shot run (one_shot.py),
the daemon's stream (daemon_stream.py) and Ray (ray_engine.py): read and hash, decode,
embed, record the result (one transaction per file, on the caller's thread). Also
`prefetched`, which runs a step ahead on worker threads.
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
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.ingest.isolated_decode import DecoderInterrupted
from ecosight_daemon.ingest.limits import IngestLimits, shortage, size_problem
from ecosight_daemon.ingest.naming import FoundFile, describe_entry, shown
from ecosight_daemon.ingest.reconcile import record_failure
from ecosight_daemon.store.clip_index import FileRecord
from ecosight_daemon.store.database import Database
from ecosight_daemon.util import pause
from ecosight_daemon.util.digest import sha256_of_bytes

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class EmbedReport:
    embedded: int = 0
    failed: int = 0
    skipped: int = 0  # bytes already cached (a rename, a copy, or a re-run)
    deferred: int = 0  # changed while being read, or the machine short of something; still pending
    shortage: str | None = None  # what the machine last ran short of while reading (descriptors, memory)
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
    short_of: str | None = None  # the machine ran short (descriptors, memory): try again later
    interrupted: str | None = None  # the decoder process died meanwhile: try again, a bounded number of times


@runtime_checkable
class ConcurrentFiles(Protocol):
    """An embedder whose fastest use is several files at once, one thread each (the ONNX
    runtime: one single-threaded run per core beats one run over every core, which
    stalls whenever decoding takes a core from it)."""

    def for_concurrent_files(self) -> tuple[Embedder, int]:
        """An embedder safe to call from several threads at once, and how many to use."""
        ...


def prepare_file(audio_dir: Path, record: FileRecord, limits: IngestLimits, cached: set[str],
                 decode: Callable[[bytes], DecodedAudio] | None = None) -> PreparedFile:
    """Read, hash and (unless cached) decode one file: everything but the model and the
    database. `decode` is the daemon's decoder in a process of its own (isolated_decode.py);
    without it the file is decoded here, with the limits."""
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
    except (OSError, MemoryError) as exc:
        if (cause := shortage(exc)) is not None:
            return PreparedFile(record, found, short_of=cause)
        return PreparedFile(record, found, problem=f"cannot read file ({getattr(exc, 'strerror', None) or exc})")
    after = describe_entry(path, record.path)
    if after is None or (after.size, after.mtime_ns) != (found.size, found.mtime_ns) or (
        len(data) != found.size
    ):
        return PreparedFile(record, after, changed_while_reading=True)
    sha256 = sha256_of_bytes(data)
    if sha256 in cached:
        return PreparedFile(record, found, sha256)
    try:
        if decode is not None:
            audio = decode(data)
        else:
            audio = decode_audio(data, limits.max_duration_s, limits.min_duration_s, limits.min_peak_dbfs)
    except AudioDecodeError as exc:
        return PreparedFile(record, found, sha256, problem=str(exc))
    except DecoderInterrupted as exc:
        return PreparedFile(record, found, sha256, interrupted=str(exc))
    except MemoryError:
        return PreparedFile(record, found, sha256, short_of="out of memory")
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


def record_result(store: Database, result: EmbeddedFile, report: EmbedReport) -> bool:
    """Write one embed step's result: embedded, already cached, failed, deferred or gone.
    True when the file's embeddings are in the cache now."""
    prepared = result.prepared
    record, found = prepared.record, prepared.found
    if found is None:
        store.clips.forget_files([record.path])
        logger.info("removed %s from the corpus (file deleted)", shown(record.path))
        return False
    if prepared.short_of is not None:
        report.deferred += 1
        report.shortage = prepared.short_of
        return False
    if prepared.interrupted is not None:
        report.deferred += 1
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
    if store.clips.has_embedding(prepared.sha256):
        store.clips.note_file(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256)
        report.skipped += 1
        logger.debug("cached %s (same bytes embedded before)", shown(found.relpath))
        return True
    if result.embeddings is None:
        # Cached when the worker looked, gone from the cache since: embed it next pass.
        report.deferred += 1
        return False
    pause.point("embedding")
    store.clips.record_embedding(found.relpath, found.label, found.size, found.mtime_ns, prepared.sha256,
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
