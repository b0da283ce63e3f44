"""A recording of any length as a stream of 16 kHz mono blocks cut on patch boundaries.

Never the whole file in memory: samples are read BLOCK_SECONDS at a time, down-mixed and
resampled as a stream, and handed on as chunks that overlap by one patch minus one hop,
so the patches of the chunks, one after another, are exactly the patches of the whole
recording (the last chunk is padded the way the front end pads a clip).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ecosight_daemon.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, TARGET_SAMPLE_RATE
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, PATCH_SAMPLES
from ecosight_daemon.errors import AudioDecodeError

BLOCK_SECONDS = 60.0  # of source audio read at once: ~1.9 MB of 16 kHz float32 whatever the file
CHUNK_PATCHES = 128  # patches handed on at once (~61 s)


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


def read_header(path: Path) -> RecordingHeader:
    """The header's rate, channels and length, checked before anything is read.

    Raises:
        AudioDecodeError: with a reason an operator understands.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(f"not a readable WAV/FLAC/OGG file ({detail})") from exc
    header = RecordingHeader(int(info.samplerate), int(info.channels), int(info.frames),
                             _declared_wav_seconds(path, int(info.frames), int(info.samplerate), int(info.channels)))
    if header.frames <= 0:
        raise AudioDecodeError("no audio frames")
    if not 0 < header.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(f"invalid sample rate {header.sample_rate} Hz (at most {MAX_SAMPLE_RATE} Hz)")
    if not 0 < header.channels <= MAX_CHANNELS:
        raise AudioDecodeError(f"{header.channels} channels; at most {MAX_CHANNELS} are read")
    return header


def _declared_wav_seconds(path: Path, frames: int, rate: int, channels: int) -> float | None:
    """A WAV's data-chunk length in seconds when it claims more frames than the file holds."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at, bits = 12, 0
    while at + 8 <= len(head):
        kind, size = head[at:at + 4], struct.unpack("<I", head[at + 4:at + 8])[0]
        if kind == b"fmt " and at + 24 <= len(head):
            bits = struct.unpack("<H", head[at + 22:at + 24])[0]
        if kind == b"data":
            if bits <= 0 or size == 0xFFFFFFFF:  # a streaming writer's placeholder: no claim made
                return None
            declared = size // (channels * ((bits + 7) // 8))
            return declared / rate if declared > frames + 1 else None
        at += 8 + size + (size & 1)
    return None


def stream_chunks(path: Path, header: RecordingHeader, end: StreamEnd, start_patch: int = 0) -> Iterator[Chunk]:
    """The recording's chunks from patch `start_patch` on; `end` is filled in as it goes.

    A file shorter than its header says (a recorder whose battery died) ends the stream
    where its data ends, with the reason in `end.truncated`, and what was read still counts.
    """
    start_sample = start_patch * PATCH_HOP_SAMPLES
    pending = np.zeros(0, dtype=np.float32)
    first_patch = start_patch
    chunk_samples = PATCH_SAMPLES + (CHUNK_PATCHES - 1) * PATCH_HOP_SAMPLES
    for block in _mono_16k_blocks(path, header, start_sample, end):
        pending = np.concatenate([pending, block])
        while len(pending) >= chunk_samples:
            yield Chunk(first_patch, pending[:chunk_samples].copy(), last=False)
            pending = pending[CHUNK_PATCHES * PATCH_HOP_SAMPLES:]
            first_patch += CHUNK_PATCHES
    if len(pending) > 0 or first_patch == start_patch:
        yield Chunk(first_patch, pending, last=True)


def _mono_16k_blocks(path: Path, header: RecordingHeader, start_sample: int, end: StreamEnd) -> Iterator[np.ndarray]:
    rate, channels = header.sample_rate, header.channels
    start_frame = int(start_sample * rate / TARGET_SAMPLE_RATE)
    block_frames = max(1024, int(BLOCK_SECONDS * rate))
    resampler = None if rate == TARGET_SAMPLE_RATE else soxr.ResampleStream(
        rate, TARGET_SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    read = start_frame
    try:
        with soundfile.SoundFile(str(path)) as sound:
            if start_frame:
                sound.seek(min(start_frame, header.frames))
            while True:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                read += len(block)
                if not np.isfinite(block).all():
                    block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
                mono = block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0].copy()
                yield mono if resampler is None else resampler.resample_chunk(mono)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        end.truncated = f"reading stopped at {read / rate:.1f} s of {header.duration_s:.1f} s ({detail})"
    if end.truncated is None:
        end.truncated = header.truncated
    end.seconds_read = read / rate
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)
