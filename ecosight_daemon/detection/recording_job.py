"""One recording in the daemon, a step at a time: probed and hashed by the recording
reader, then streamed chunk by chunk through YAMNet, each chunk's patch embeddings and
onset features committed to the cache with the recording's progress. Scoring reads them
back (cached_scoring.py), so a new model re-scores without decoding, and a restart (or the
recording's next turn) resumes at the first chunk not cached.

The file is looked at before every step: one that changes (still being copied, replaced)
stops the run, and the recording starts again once it has settled.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

import numpy as np

from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.detection.chunk_front_end import CONTEXT_HOPS, ChunkFrontEnd
from ecosight_daemon.detection.clock import UTC, iso_utc, recording_clock
from ecosight_daemon.detection.recording_reader import RecordingReader, Waiting
from ecosight_daemon.detection.stream import (
    DEFAULT_LIMITS,
    HeaderLimits,
    RecordingHeader,
    StreamEnd,
    read_header,
    stream_chunks,
)
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, PATCH_HOP_SECONDS, patch_count
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.store.recordings import RecordingLedger
from ecosight_daemon.util import pause
from ecosight_daemon.util.printable import printable

logger = logging.getLogger(__name__)


class RecordingChanged(Exception):
    """The file changed under the run (still being written, or replaced)."""


@dataclass(frozen=True)
class JobSettings:
    dtype: str
    zone: tzinfo = UTC
    limits: HeaderLimits = DEFAULT_LIMITS
    turn_chunks: int = 0  # chunks analysed before the turn passes to another recording; 0: no limit


def file_identity(path: Path) -> tuple[int, int]:
    """Size and mtime; OSError unless it is a regular file (a FIFO or a device is never opened)."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(0, "not a regular file (replaced by a link, FIFO or device?)")
    return info.st_size, info.st_mtime_ns


def run_recording(root: Path, relpath: str, ledger: RecordingLedger, embedder: Embedder, reader: RecordingReader,
                  settings: JobSettings) -> Iterator[float | None]:
    """Yields the seconds of audio cached so far after each step (None while the reader works).
    Returns at the end of the recording, or after `turn_chunks` chunks (its state stays
    `detecting`: the next turn resumes).

    Raises:
        AudioDecodeError: the file cannot be analysed (the reason is for the operator).
        RecordingChanged: the file changed while it was read.
        ReaderInterrupted: the reader process died (the caller counts the attempt).
        OSError: it vanished or cannot be read.
    """
    path = root / relpath
    identity = file_identity(path)
    header, evidence = yield from read_header(reader, path, settings.limits)
    clock = recording_clock(path, evidence, settings.zone)
    if clock.note:
        logger.warning("recording %s: clock: %s", printable(relpath), clock.note)
    row = ledger.get(relpath)
    if row is not None and row.sha256 and (row.size, row.mtime_ns) == identity:
        sha256 = row.sha256  # hashed on an earlier turn; the file has not changed since
    else:
        sha256 = yield from reader.sha256(path)
        _still_the_same(path, identity)
    ledger.started(relpath, sha256, iso_utc(clock.start_utc), clock.source, clock.note)
    original = ledger.copy_of(sha256, relpath)
    if original is not None:
        logger.info("%s: same audio as %s, already analysed", printable(relpath), printable(original.path))
        ledger.same_as(relpath, original)
        return
    model_id = embedder.model_id
    start_patch = ledger.cached_patches(sha256, model_id)
    if start_patch and start_patch >= patch_count(round(header.duration_s * TARGET_SAMPLE_RATE)):
        # Every patch is cached already: this content was analysed under a name since forgotten
        # (a file moved inside the folder is seen gone before it is seen again).
        logger.info("%s: every patch already cached (%d); nothing read again", printable(relpath), start_patch)
        ledger.done_from_cache(relpath, header.duration_s, header.truncated)
        return
    front_end = ChunkFrontEnd(embedder)
    if start_patch:
        logger.info("%s: resuming at %.1f s (%d patches already cached)", printable(relpath),
                    start_patch * PATCH_HOP_SECONDS, start_patch)
        front_end.prime((yield from _audio_before(reader, path, header, start_patch)))
    end = StreamEnd()
    chunks = 0
    for chunk in stream_chunks(reader, path, header, end, start_patch):
        if chunk is None:
            yield None
            continue
        patches, chunk_onsets, spectrograms = front_end.feed(chunk.waveform)
        _still_the_same(path, identity)
        seconds = min(header.duration_s, (chunk.first_patch + len(patches)) * PATCH_HOP_SECONDS)
        if chunk.last:
            seconds = end.seconds_read
        ledger.add_chunk(sha256, model_id, chunk.first_patch, patches, chunk_onsets, spectrograms, settings.dtype,
                         seconds, relpath, last=chunk.last, truncated=end.truncated if chunk.last else None)
        if chunk.first_patch > 0:
            pause.point("recording_chunk")
        yield seconds
        chunks += 1
        if not chunk.last and settings.turn_chunks and chunks >= settings.turn_chunks:
            return
    if end.truncated:
        logger.warning("%s: %s", printable(relpath), end.truncated)


def _audio_before(reader: RecordingReader, path: Path, header: RecordingHeader,
                  start_patch: int) -> Waiting[np.ndarray]:
    """The audio of the CONTEXT_HOPS hops before `start_patch` (onset features look back that far)."""
    first = max(0, start_patch - CONTEXT_HOPS)
    for chunk in stream_chunks(reader, path, header, StreamEnd(), first):
        if chunk is not None:
            return chunk.waveform[:(start_patch - first) * PATCH_HOP_SAMPLES]
        yield
    return np.zeros(0, np.float32)


def _still_the_same(path: Path, identity: tuple[int, int]) -> None:
    try:
        now = file_identity(path)
    except FileNotFoundError as exc:
        raise RecordingChanged("the file was removed") from exc
    if now != identity:
        raise RecordingChanged(f"the file changed while it was read (size {identity[0]} -> {now[0]} bytes)")

