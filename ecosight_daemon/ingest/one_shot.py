"""The CLI's one-shot run: every pending file to committed cache rows, read, hashed and
decoded on worker threads while the current file runs through the model (or, for an
embedder that runs several files at once, each worker takes a file from its bytes to its
embeddings); every database write on the caller's thread, one transaction per file.
The daemon embeds through daemon_stream.py instead, across loop turns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.ingest.file_steps import (
    ConcurrentFiles,
    EmbeddedFile,
    EmbedReport,
    Progress,
    embed_prepared,
    prefetched,
    prepare_file,
    record_result,
)
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.store.clip_index import FileRecord, FileState
from ecosight_daemon.store.database import Database

logger = logging.getLogger(__name__)


def embed_pending(
    store: Database,
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
    pending = store.clips.files(FileState.PENDING, limit)
    cached = store.clips.cached_hashes() if cached is None else cached
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
