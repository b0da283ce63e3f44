"""A recording of any length as a stream of 16 kHz mono blocks cut on patch boundaries.

Never the whole file in memory, and never read in this process: the recording reader
(recording_reader.py) reads BLOCK_BYTES of samples at a time, whatever the file's rate and
channel count, and down-mixes them; they are resampled here as a stream and handed on as
chunks that overlap by one patch minus one hop, so the patches of the chunks, one after
another, are exactly the patches of the whole recording (the last chunk is padded the way
the front end pads a clip). The stream yields None while it waits for the reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ecosight_daemon.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, TARGET_SAMPLE_RATE
from ecosight_daemon.detection.clock import ClockEvidence
from ecosight_daemon.detection.recording_reader import Probe, RecordingReader, Waiting
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, PATCH_SAMPLES
from ecosight_daemon.errors import AudioDecodeError

BLOCK_BYTES = 8 << 20  # of float32 samples, all channels, read at once (the reader's bound too)
CHUNK_PATCHES = 128  # patches handed on at once (~61 s)


@dataclass(frozen=True)
class HeaderLimits:
    """What a recording may claim before it is refused ([detection] in config.toml)."""

    min_sample_rate: int = 8_000
    max_hours: float = 48.0


DEFAULT_LIMITS = HeaderLimits()


@dataclass(frozen=True)
class RecordingHeader:
    sample_rate: int
    channels: int
    frames: int  # what the file holds (libsndfile counts what is there)
    declared_s: float | None = None  # what a WAV's data chunk claims, when that is more

    @property
    def truncated(self) -> str | None:
        if self.declared_s is None:
            return None
        return (f"the header says {self.declared_s:.1f} s but the data ends at {self.duration_s:.1f} s "
                "(a recorder that lost power?); what is there is analysed")

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Chunk:
    first_patch: int  # index of this chunk's first patch in the whole recording
    waveform: np.ndarray  # 16 kHz mono float32: the samples its patches read
    last: bool


@dataclass
class StreamEnd:
    """What the stream found once it ended: how much it read and why it stopped early, if it did."""

    seconds_read: float = 0.0
    truncated: str | None = None


def read_header(reader: RecordingReader, path: Path,
                limits: HeaderLimits = DEFAULT_LIMITS) -> Waiting[tuple[RecordingHeader, ClockEvidence]]:
    """The header's rate, channels and length, checked before anything is read; the clock evidence.

    Raises:
        AudioDecodeError: with a reason an operator understands.
    """
    probe = yield from reader.probe(path)
    return checked_header(probe, limits), probe.clock


def checked_header(probe: Probe, limits: HeaderLimits) -> RecordingHeader:
    header = RecordingHeader(probe.sample_rate, probe.channels, probe.frames, probe.declared_s)
    if header.frames <= 0:
        raise AudioDecodeError("no audio frames")
    if not 0 < header.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(f"invalid sample rate {header.sample_rate} Hz (at most {MAX_SAMPLE_RATE} Hz)")
    if header.sample_rate < limits.min_sample_rate:
        raise AudioDecodeError(f"sample rate {header.sample_rate} Hz is below [detection] min_sample_rate "
                               f"({limits.min_sample_rate} Hz): a damaged header, or audio too coarse to hear shots in")
    if not 0 < header.channels <= MAX_CHANNELS:
        raise AudioDecodeError(f"{header.channels} channels; at most {MAX_CHANNELS} are read")
    hours = max(header.duration_s, header.declared_s or 0.0) / 3600
    if hours > limits.max_hours:
        raise AudioDecodeError(f"{hours:.1f} h of audio; [detection] max_hours is {limits.max_hours:g} (split the "
                               "file, or raise max_hours: each hour costs ~27 MB of cache)")
    return header


def stream_chunks(reader: RecordingReader, path: Path, header: RecordingHeader, end: StreamEnd,
                  start_patch: int = 0) -> Iterator[Chunk | None]:
    """The recording's chunks from patch `start_patch` on, None while the reader works;
    `end` is filled in as it goes.

    A file shorter than its header says (a recorder whose battery died) ends the stream
    where its data ends, with the reason in `end.truncated`, and what was read still counts.
    """
    start_sample = start_patch * PATCH_HOP_SAMPLES
    pending = np.zeros(0, dtype=np.float32)
    first_patch = start_patch
    chunk_samples = PATCH_SAMPLES + (CHUNK_PATCHES - 1) * PATCH_HOP_SAMPLES
    for block in _mono_16k_blocks(reader, path, header, start_sample, end):
        if block is None:
            yield None
            continue
        pending = np.concatenate([pending, block])
        while len(pending) >= chunk_samples:
            yield Chunk(first_patch, pending[:chunk_samples].copy(), last=False)
            pending = pending[CHUNK_PATCHES * PATCH_HOP_SAMPLES:]
            first_patch += CHUNK_PATCHES
    if len(pending) > 0 or first_patch == start_patch:
        yield Chunk(first_patch, pending, last=True)


def _mono_16k_blocks(reader: RecordingReader, path: Path, header: RecordingHeader, start_sample: int,
                     end: StreamEnd) -> Iterator[np.ndarray | None]:
    rate, channels = header.sample_rate, header.channels
    start_frame = min(int(start_sample * rate / TARGET_SAMPLE_RATE), header.frames)
    block_frames = max(1024, BLOCK_BYTES // (4 * channels))
    resampler = None if rate == TARGET_SAMPLE_RATE else soxr.ResampleStream(
        rate, TARGET_SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    read = start_frame
    try:
        ahead = reader.read_ahead(path, read, min(block_frames, header.frames - read)) if read < header.frames else None
        while ahead is not None:
            mono: np.ndarray = yield from ahead
            if len(mono) == 0:
                break
            read += len(mono)
            # The next block is asked for before this one is handed on: the child reads it meanwhile.
            ahead = reader.read_ahead(path, read, min(block_frames, header.frames - read)) \
                if read < header.frames else None
            yield mono if resampler is None else resampler.resample_chunk(mono)
    except AudioDecodeError as exc:
        if read == start_frame:
            raise
        end.truncated = f"reading stopped at {read / rate:.1f} s of {header.duration_s:.1f} s ({exc})"
    if end.truncated is None:
        end.truncated = header.truncated
    end.seconds_read = read / rate
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
