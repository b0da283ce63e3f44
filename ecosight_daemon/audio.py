"""Which files count as audio, and turning their bytes into 16 kHz mono float32.

Decoding works on bytes already in memory, so the hash recorded for a file and
the audio embedded from it always come from the same read.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from ecosight_daemon.errors import AudioDecodeError

TARGET_SAMPLE_RATE = 16_000
RESAMPLER = "soxr-HQ"
DOWNMIX = "mean"
# Bump when anything above changes what the model sees, so old embeddings are not reused.
FRONTEND_VERSION = 1

READABLE_EXTENSIONS = (".wav", ".flac", ".ogg")  # what the decoders read; the one list
TEMPORARY_SUFFIXES = (".part", ".tmp", ".swp", ".swx", ".crdownload", ".partial")


def is_ignored_name(name: str) -> bool:
    """Hidden files and the names editors and downloaders use while writing."""
    lowered = name.lower()
    return name.startswith(".") or name.endswith("~") or lowered.endswith(TEMPORARY_SUFFIXES)


def is_audio_name(name: str, extensions: tuple[str, ...]) -> bool:
    """True for a name we ingest: a wanted extension (any case) and not ignored."""
    if is_ignored_name(name):
        return False
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in {ext.lower() for ext in extensions}


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray  # float32, 1-D, TARGET_SAMPLE_RATE
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / TARGET_SAMPLE_RATE


BLOCK_BYTES = 4 << 20  # decoded samples held at once, whatever the file's rate or channel count
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 256


def decode_audio(data: bytes, max_duration_s: float, min_duration_s: float = 0.0,
                 min_peak_dbfs: float | None = None) -> DecodedAudio:
    """Decode a file's bytes, down-mix to mono and resample to 16 kHz, block by block.

    Memory is bounded whatever the file claims or holds: the header's rate, channels and
    length are checked before anything is allocated, samples are read in blocks of
    BLOCK_BYTES, down-mixed and resampled as a stream, and reading stops once more than
    max_duration_s has been read (a header may lie about its length). What is kept is the
    16 kHz mono result: at most max_duration_s x 64 KB/s (38 MB for 600 s).

    With `min_peak_dbfs`, a file whose loudest sample (any channel, before resampling)
    is quieter than that is refused: digital silence teaches a classifier nothing, and
    under a class folder it would become a sample of that class.

    Raises:
        AudioDecodeError: with a reason an operator understands.
    """
    if not data:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            rate, channels = _checked_header(sound, max_duration_s, min_duration_s)
            mono, peak = _stream_to_16k(sound, rate, channels, max_duration_s)
    except (AudioDecodeError, MemoryError) as exc:
        if isinstance(exc, MemoryError):
            raise AudioDecodeError("not enough memory to decode this file") from exc
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(f"not a readable WAV/FLAC/OGG file ({detail})") from exc
    if min_peak_dbfs is not None:
        refuse_if_silent(peak, min_peak_dbfs)
    return DecodedAudio(mono, rate, channels)


def _checked_header(sound: soundfile.SoundFile, max_duration_s: float, min_duration_s: float) -> tuple[int, int]:
    rate, channels, frames = sound.samplerate, sound.channels, sound.frames
    if frames <= 0:
        raise AudioDecodeError("no audio frames")
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(f"invalid sample rate {rate} Hz (at most {MAX_SAMPLE_RATE} Hz)")
    if not 0 < channels <= MAX_CHANNELS:
        raise AudioDecodeError(f"{channels} channels; at most {MAX_CHANNELS} are read")
    duration = frames / rate
    if duration > max_duration_s:
        raise AudioDecodeError(f"longer than max_duration_s ({max_duration_s:g} s): {duration:.1f} s")
    if duration < min_duration_s:
        raise AudioDecodeError(
            f"shorter than min_duration_s ({min_duration_s:g} s): {frames} frame(s), {duration:.4f} s"
        )
    return rate, channels


def _stream_to_16k(sound: soundfile.SoundFile, rate: int, channels: int,
                   max_duration_s: float) -> tuple[np.ndarray, float]:
    """(16 kHz mono float32, peak absolute sample) read block by block."""
    block_frames = max(1024, BLOCK_BYTES // (4 * channels))
    limit = int(max_duration_s * rate) + 1
    resampler = None if rate == TARGET_SAMPLE_RATE else soxr.ResampleStream(
        rate, TARGET_SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    pieces: list[np.ndarray] = []
    read, peak = 0, 0.0
    for block in sound.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
        read += len(block)
        if read > limit:
            raise AudioDecodeError(f"longer than max_duration_s ({max_duration_s:g} s) although its header "
                                   "says otherwise")
        if not np.isfinite(block).all():
            raise AudioDecodeError("contains NaN or infinite samples")
        peak = max(peak, float(np.max(np.abs(block))))
        mono = block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0]
        pieces.append(mono.copy() if resampler is None else resampler.resample_chunk(mono))
    if read == 0:
        raise AudioDecodeError("no audio frames could be read (truncated file?)")
    if resampler is not None:
        pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32), peak


def peak_dbfs(peak: float) -> float:
    """A peak absolute sample value in dB relative to full scale (-inf for digital silence)."""
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def refuse_if_silent(peak: float, min_peak_dbfs: float) -> None:
    level = peak_dbfs(peak)
    if level < min_peak_dbfs:
        what = "digital silence (every sample is 0)" if level == -math.inf else f"nearly silent: peak {level:.1f} dBFS"
        raise AudioDecodeError(f"{what}, below min_peak_dbfs ({min_peak_dbfs:g} dBFS); nothing to learn from")


def frontend_settings() -> dict[str, object]:
    """What the embedding fingerprint must capture about this front end."""
    return {
        "sample_rate": TARGET_SAMPLE_RATE,
        "resampler": RESAMPLER,
        "downmix": DOWNMIX,
        "frontend_version": FRONTEND_VERSION,
    }
