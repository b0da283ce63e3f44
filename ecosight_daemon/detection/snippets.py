"""A few seconds around a detection, cut from its recording by seeking (a 24 h file is
never loaded) in the recording reader's process, within a wall-clock budget: as a 16 kHz
16-bit WAV for the player (what the model hears), and as a spectrogram PNG (NumPy and
zlib; nothing to install, nothing loaded from elsewhere)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile

from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.detection.recording_reader import shared_cutter

SNIPPET_S = 6.0
SPECTROGRAM_HEIGHT = 128  # frequency rows, 0-8 kHz
FFT = 512
HOP = 128


def cut(path: Path, centre_s: float, seconds: float = SNIPPET_S) -> tuple[np.ndarray, int]:
    """16 kHz mono float32 samples of `seconds` around `centre_s` (clipped to the file) and their rate.

    Raises:
        AudioDecodeError: the file cannot be read (or took longer than the budget).
        TimeoutError, ReaderInterrupted: the reader is busy or was stopped; try again.
    """
    return shared_cutter().cut(path, centre_s, seconds), TARGET_SAMPLE_RATE


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def spectrogram_png(samples: np.ndarray, rate: int) -> bytes:
    """Log-magnitude spectrogram, 0 to 8 kHz, low frequencies at the bottom, dark = loud."""
    if rate != TARGET_SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, TARGET_SAMPLE_RATE)
    samples = np.concatenate([samples, np.zeros(max(0, FFT - len(samples)), np.float32)])
    frames = np.lib.stride_tricks.sliding_window_view(samples, FFT)[::HOP] * np.hanning(FFT)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, :FFT // 2] ** 2
    rows = power.reshape(len(power), SPECTROGRAM_HEIGHT, -1).mean(axis=2)  # (time, 128 bands)
    decibels = 10 * np.log10(rows + 1e-12)
    top = decibels.max()
    shade = np.clip((top - decibels) / 80.0, 0.0, 1.0)  # the loudest 80 dB spread over the grey scale
    image = (shade.T[::-1] * 255).astype(np.uint8)
    return _png_grey(image)


def _png_grey(image: np.ndarray) -> bytes:
    height, width = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
