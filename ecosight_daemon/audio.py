"""Which files count as audio, and turning their bytes into 16 kHz mono float32.

Decoding works on bytes already in memory, so the hash recorded for a file and
the audio embedded from it always come from the same read.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import soundfile
import soxr

from .errors import AudioDecodeError

TARGET_SAMPLE_RATE = 16_000
RESAMPLER = "soxr-HQ"
DOWNMIX = "mean"
# Bump when anything above changes what the model sees, so old embeddings are not reused.
FRONTEND_VERSION = 1

TEMPORARY_SUFFIXES = (".part", ".tmp", ".swp", ".swx", ".crdownload", ".partial")


def is_ignored_name(name: str) -> bool:
    """Hidden files and the names editors and downloaders use while writing."""
    lowered = name.lower()
    return name.startswith(".") or name.endswith("~") or lowered.endswith(TEMPORARY_SUFFIXES)


def is_audio_name(name: str, extensions: tuple[str, ...]) -> bool:
    """True for a name we ingest: a wanted extension (any case) and not ignored."""
    if is_ignored_name(name):
        return False
    return PurePath(name).suffix.lower() in {ext.lower() for ext in extensions}


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray  # float32, 1-D, TARGET_SAMPLE_RATE
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / TARGET_SAMPLE_RATE


def decode_audio(data: bytes, max_duration_s: float, min_duration_s: float = 0.0,
                 min_peak_dbfs: float | None = None) -> DecodedAudio:
    """Decode a whole file's bytes, down-mix to mono and resample to 16 kHz.

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
            rate, channels, frames = sound.samplerate, sound.channels, sound.frames
            if frames <= 0:
                raise AudioDecodeError("no audio frames")
            if rate <= 0:
                raise AudioDecodeError(f"invalid sample rate {rate} Hz")
            duration = frames / rate
            if duration > max_duration_s:
                raise AudioDecodeError(
                    f"longer than max_duration_s ({max_duration_s:g} s): {duration:.1f} s"
                )
            if duration < min_duration_s:
                raise AudioDecodeError(
                    f"shorter than min_duration_s ({min_duration_s:g} s): {frames} frame(s), {duration:.4f} s"
                )
            samples = sound.read(dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(f"not a readable WAV/FLAC/OGG file ({detail})") from exc
    if samples.shape[0] == 0:
        raise AudioDecodeError("no audio frames could be read (truncated file?)")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("contains NaN or infinite samples")
    if min_peak_dbfs is not None:
        refuse_if_silent(samples, min_peak_dbfs)
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return DecodedAudio(resample(mono, rate), rate, channels)


def peak_dbfs(samples: np.ndarray) -> float:
    """The loudest sample in dB relative to full scale (-inf for digital silence)."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def refuse_if_silent(samples: np.ndarray, min_peak_dbfs: float) -> None:
    level = peak_dbfs(samples)
    if level < min_peak_dbfs:
        what = "digital silence (every sample is 0)" if level == -math.inf else f"nearly silent: peak {level:.1f} dBFS"
        raise AudioDecodeError(f"{what}, below min_peak_dbfs ({min_peak_dbfs:g} dBFS); nothing to learn from")


def resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """Resample 1-D float32 audio to TARGET_SAMPLE_RATE."""
    if rate == TARGET_SAMPLE_RATE:
        return np.ascontiguousarray(mono, dtype=np.float32)
    out = soxr.resample(mono, rate, TARGET_SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def frontend_settings() -> dict[str, object]:
    """What the embedding fingerprint must capture about this front end."""
    return {
        "sample_rate": TARGET_SAMPLE_RATE,
        "resampler": RESAMPLER,
        "downmix": DOWNMIX,
        "frontend_version": FRONTEND_VERSION,
    }
