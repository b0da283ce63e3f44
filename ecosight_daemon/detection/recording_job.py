"""One recording in the daemon, a step at a time: hashed, then streamed chunk by chunk
through YAMNet, each chunk's patch embeddings and onset features committed to the cache
with the recording's progress. Scoring reads them back (cached_scoring.py), so a new
model re-scores without decoding, and a restart resumes at the first chunk not cached.

The file is looked at before every step: one that changes (still being copied, replaced)
stops the run, and the recording starts again once it has settled.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path

import numpy as np

from ecosight_daemon.cache.recordings import RecordingLedger
from ecosight_daemon.detection.chunk_front_end import CONTEXT_HOPS, ChunkFrontEnd
from ecosight_daemon.detection.clock import UTC, recording_clock
from ecosight_daemon.detection.stream import RecordingHeader, StreamEnd, read_header, stream_chunks
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.util import pause

logger = logging.getLogger(__name__)
HASH_STEP_BYTES = 32 << 20  # hashed per step: ~0.1 s, so the loop answers signals while a 8 GB file is hashed
HOP_S = PATCH_HOP_SAMPLES / 16_000


class RecordingChanged(Exception):
    """The file changed under the run (still being written, or replaced)."""


def file_identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def run_recording(root: Path, relpath: str, ledger: RecordingLedger, embedder: Embedder, dtype: str,
                  zone: tzinfo = UTC) -> Iterator[float]:
    """Yields the seconds of audio cached so far after each step.

    Raises:
        AudioDecodeError: the file cannot be analysed (the reason is for the operator).
        RecordingChanged: the file changed while it was read.
        OSError: it vanished or cannot be read.
    """
    path = root / relpath
    identity = file_identity(path)
    clock = recording_clock(path, zone, None)
    header = read_header(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_STEP_BYTES):
            digest.update(block)
            _still_the_same(path, identity)
            yield 0.0
    sha256 = digest.hexdigest()
    start_utc = None if clock.start_utc is None else clock.start_utc.isoformat()
    ledger.started(relpath, sha256, start_utc, clock.source)
    original = ledger.copy_of(sha256, relpath)
    if original is not None:
        logger.info("%s: same audio as %s, already analysed", relpath, original.path)
        ledger.same_as(relpath, original)
        return
    model_id = embedder.model_id
    start_patch = ledger.cached_patches(sha256, model_id)
    front_end = ChunkFrontEnd(embedder)
    if start_patch:
        logger.info("%s: resuming at %.1f s (%d patches already cached)", relpath, start_patch * HOP_S, start_patch)
        front_end.prime(_audio_before(path, header, start_patch))
    end = StreamEnd()
    for chunk in stream_chunks(path, header, end, start_patch):
        patches, chunk_onsets = front_end.feed(chunk.waveform)
        _still_the_same(path, identity)
        seconds = min(header.duration_s, (chunk.first_patch + len(patches)) * HOP_S)
        if chunk.last:
            seconds = end.seconds_read
        ledger.add_chunk(sha256, model_id, chunk.first_patch, patches, chunk_onsets, dtype, seconds, relpath,
                         last=chunk.last, truncated=end.truncated if chunk.last else None)
        if chunk.first_patch > 0:
            pause.point("recording_chunk")
        yield seconds
    if end.truncated:
        logger.warning("%s: %s", relpath, end.truncated)


def _audio_before(path: Path, header: RecordingHeader, start_patch: int) -> np.ndarray:
    """The audio of the CONTEXT_HOPS hops before `start_patch` (onset features look back that far)."""
    first = max(0, start_patch - CONTEXT_HOPS)
    for chunk in stream_chunks(path, header, StreamEnd(), first):
        return chunk.waveform[:(start_patch - first) * PATCH_HOP_SAMPLES]
    return np.zeros(0, np.float32)


def _still_the_same(path: Path, identity: tuple[int, int]) -> None:
    try:
        now = file_identity(path)
    except FileNotFoundError as exc:
        raise RecordingChanged("the file was removed") from exc
    if now != identity:
        raise RecordingChanged(f"the file changed while it was read (size {identity[0]} -> {now[0]} bytes)")

