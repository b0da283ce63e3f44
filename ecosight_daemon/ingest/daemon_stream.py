"""The daemon's embedding pipeline, kept running across the main loop's turns.

Worker threads take pending files from their bytes to their embeddings (or, for an
embedder that runs one file at a time, to their decoded audio) while the loop thread
answers the inbox; each turn the loop writes the files that finished, as they finish,
one transaction each (a file that takes its decoder's whole budget holds back no other).
A pipeline started and drained once a batch left the cores idle at every batch's start
and end and while the loop took in a burst's file events (a daemon with 14,000 files
indexed embedded a burst at 0.8 of the model's own rate).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from queue import SimpleQueue

import numpy as np
import soundfile

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.ingest.file_steps import (
    ConcurrentFiles,
    EmbeddedFile,
    EmbedReport,
    PreparedFile,
    embed_prepared,
    prepare_file,
    record_result,
)
from ecosight_daemon.ingest.isolated_decode import IsolatedDecoder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.naming import shown
from ecosight_daemon.store.attempts import MAX_ATTEMPTS
from ecosight_daemon.store.clip_index import FileRecord, FileState
from ecosight_daemon.store.database import Database

logger = logging.getLogger(__name__)

SHORTAGE_RETRY_S = 5.0  # out of descriptors or memory: how long a file waits before it is read again
WAKE_POLL_S = 0.02  # how often a wait on the next file looks at the loop's inbox
DECODER_IDLE_S = 60.0  # a decoder process unused this long is stopped


class EmbedStream:
    def __init__(self, embedder: Embedder, audio_dir: Path, limits: IngestLimits) -> None:
        self._audio_dir = audio_dir
        self._limits = limits
        self._embedder = embedder
        self._on_worker: Embedder | None = None  # the model runs on the workers too
        if isinstance(embedder, ConcurrentFiles):
            self._on_worker, workers = embedder.for_concurrent_files()
            # Results are written in order: with one file queued per worker, a worker done
            # with its short clips sat idle behind a long one (a quarter of 2 cores).
            self._ahead = 4 * workers
        else:
            workers, self._ahead = 1, 2
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecosight-embed")
        # Decoding runs in child processes that can be stopped, one per worker thread.
        self._decoders = [IsolatedDecoder(limits) for _ in range(workers)]
        self._idle_decoders: SimpleQueue[IsolatedDecoder] = SimpleQueue()
        for decoder in self._decoders:
            self._idle_decoders.put(decoder)
        self._queue: dict[str, Future[EmbeddedFile | PreparedFile]] = {}  # by path, in the order started
        self._cached: set[str] | None = None  # read once a burst (~10 ms at 14,000 files), kept in step
        self._not_before: dict[str, float] = {}  # files the machine was too short to read, and when to retry
        self._shortage: str | None = None  # what it is short of, logged once until it is over
        self._warm_up(workers)

    def _warm_up(self, workers: int) -> None:
        """Each worker decodes and embeds once at start: a daemon's first burst ran at 0.82
        of the model's rate cold and at 0.9 once its threads had embedded a few files
        (14,000 files indexed, all cached, so start-up had embedded nothing)."""
        model = self._on_worker
        if model is None:
            return
        together = threading.Barrier(workers)  # one call on each worker thread, not two on one
        clip = warm_up_clip()

        def warm(_: int) -> None:
            together.wait(timeout=60)
            model.embed(decode_audio(clip, max_duration_s=120).waveform)

        list(self._pool.map(warm, range(workers)))

    @property
    def busy(self) -> bool:
        """Files started and not yet written."""
        return bool(self._queue)

    def run(self, store: Database, limit: int, time_budget_s: float,
            wake: Callable[[], bool] = lambda: False) -> EmbedReport:
        """Start pending files (up to the pipeline's depth), write those that finish, in the
        order they finish, for about `time_budget_s`; files still running are written by a
        later call. Returns early when `wake()` (the loop has messages: maybe more files)
        while the pipeline has room: at a burst's start the first file's event comes alone,
        and waiting on it left the other core idle while the rest of the burst's events
        queued up."""
        started = time.monotonic()
        deadline = started + time_budget_s
        report = EmbedReport()
        if self._cached is None:
            self._cached = store.clips.cached_hashes()
        now = time.monotonic()
        waiting = deque(r for r in store.clips.files(FileState.PENDING, limit)
                        if r.path not in self._queue and self._not_before.get(r.path, 0.0) <= now)
        self._start(store, waiting, report)
        while self._queue:
            finished = [path for path, future in self._queue.items() if future.done()]
            if not finished:
                left = deadline - time.monotonic()
                if left <= 0 or (len(self._queue) < self._ahead and wake()):
                    break
                wait(self._queue.values(), timeout=min(WAKE_POLL_S, left), return_when=FIRST_COMPLETED)
                continue
            for path in finished:
                self._write(store, self._queue.pop(path).result(), report)
            self._start(store, waiting, report)
        report.seconds = time.monotonic() - started
        return report

    def _write(self, store: Database, done: EmbeddedFile | PreparedFile, report: EmbedReport) -> None:
        assert self._cached is not None
        result = done if isinstance(done, EmbeddedFile) else embed_prepared(self._embedder, done)
        prepared = result.prepared
        path = prepared.record.path
        if prepared.short_of is not None:  # the machine's fault, not the file's: not an attempt
            store.attempts.take_back([path])
        in_cache = record_result(store, result, report)
        self._note_shortage(path, prepared.short_of)
        if prepared.interrupted is not None:
            logger.warning("decoding %s was interrupted (%s); it is tried again in %.0f s",
                           shown(path), prepared.interrupted, SHORTAGE_RETRY_S)
            self._not_before[path] = time.monotonic() + SHORTAGE_RETRY_S
        if prepared.sha256:  # bytes gone from the cache since are decoded next time
            (self._cached.add if in_cache else self._cached.discard)(prepared.sha256)

    def _note_shortage(self, path: str, short_of: str | None) -> None:
        """Out of descriptors or memory: the file waits SHORTAGE_RETRY_S; one log line per cause."""
        if short_of is None:
            self._not_before.pop(path, None)
            if self._shortage is not None and not self._not_before:
                logger.warning("reading files works again (after: %s)", self._shortage)
                self._shortage = None
            return
        self._not_before[path] = time.monotonic() + SHORTAGE_RETRY_S
        if short_of != self._shortage:
            logger.warning("cannot read files now (%s); they stay pending and are tried again every %.0f s",
                           short_of, SHORTAGE_RETRY_S)
            self._shortage = short_of

    def burst_over(self) -> None:
        """Nothing pending: the cached hashes are read afresh when files come again, and
        decoders idle for DECODER_IDLE_S are stopped (an idle daemon holds none)."""
        if not self._queue:
            self._cached = None
            for decoder in self._decoders:
                decoder.stop_if_idle(DECODER_IDLE_S)

    def close(self, store: Database | None = None) -> None:
        """Drop files not yet started, stop the decoders of those running and wait for
        them; all stay pending in the cache (their starts not counted) and are embedded on
        the next start."""
        for future in self._queue.values():
            future.cancel()
        for decoder in self._decoders:
            decoder.interrupt()
        self._pool.shutdown(wait=True)
        for decoder in self._decoders:
            decoder.close()
        if store is not None and self._queue:
            store.attempts.take_back(list(self._queue))
        self._queue.clear()

    def _start(self, store: Database, waiting: deque[FileRecord], report: EmbedReport) -> None:
        """Start files until the pipeline is full, each start counted in the cache first:
        a file started MAX_ATTEMPTS times without a result (it hung or killed its reader)
        is recorded failed instead."""
        while waiting and len(self._queue) < self._ahead:
            batch = [waiting.popleft() for _ in range(min(len(waiting), self._ahead - len(self._queue)))]
            counts = store.attempts.count((r.path, r.size, r.mtime_ns) for r in batch)
            for record in batch:
                if counts[record.path] > MAX_ATTEMPTS:
                    self._give_up(store, record, report)
                else:
                    self._queue[record.path] = self._pool.submit(self._work, record)

    def _give_up(self, store: Database, record: FileRecord, report: EmbedReport) -> None:
        reason = (f"reading it was interrupted {MAX_ATTEMPTS} times (its decoder or the daemon died or was "
                  "stopped meanwhile); it is not tried again until the file changes")
        store.clips.record_failure(record.path, record.label, record.size, record.mtime_ns, record.sha256, reason)
        logger.warning("failed %s: %s", shown(record.path), reason)
        report.failed += 1
        report.failures.append((record.path, reason))

    def _work(self, record: FileRecord) -> EmbeddedFile | PreparedFile:
        assert self._cached is not None
        decoder = self._idle_decoders.get()
        try:
            prepared = prepare_file(self._audio_dir, record, self._limits, self._cached, decoder.decode)
        finally:
            self._idle_decoders.put(decoder)
        return prepared if self._on_worker is None else embed_prepared(self._on_worker, prepared)


def warm_up_clip() -> bytes:
    """20 s of quiet noise at 22.05 kHz: a resampled decode and a full batch of patches."""
    samples = np.random.default_rng(0).uniform(-0.1, 0.1, 20 * 22_050).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, samples, 22_050, subtype="PCM_16", format="WAV")
    return out.getvalue()
