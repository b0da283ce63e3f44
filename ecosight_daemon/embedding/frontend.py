"""YAMNet's front end in NumPy: a 16 kHz mono waveform to the log-mel patches its CNN reads.

The same steps, constants and float32 arithmetic as the SavedModel's own graph:

1. Zero-pad the waveform to whole patches: N = 1 + ceil(max(0, L - 15600) / 7680)
   patches, so L becomes 15600 + 7680 * (N - 1) samples (an empty clip is one patch).
2. STFT magnitude: frames of 400 samples (25 ms) every 160 (10 ms), no end padding,
   a periodic Hann window, a 512-point real FFT, |X|.
3. Mel: times the 257 x 64 matrix of `tf.signal.linear_to_mel_weight_matrix` (HTK mel
   scale 1127 ln(1 + f/700), 64 triangular bands with edges spread evenly in mel from
   125 to 7500 Hz, the DC bin zeroed).
4. log(mel + 0.001).
5. Patches of 96 frames (0.96 s) every 48 frames (0.48 s): (N, 96, 64) float32.

tests/embedding/test_frontend.py checks each step against TensorFlow's.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from ecosight_daemon.audio import TARGET_SAMPLE_RATE

SAMPLE_RATE = TARGET_SAMPLE_RATE  # YAMNet's rate: what every decoder resamples to
WINDOW = 400  # samples per STFT frame (25 ms)
HOP = 160  # samples between frames (10 ms)
FFT_LENGTH = 512  # the next power of two above WINDOW
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WINDOW  # 15,600: the samples one patch needs
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP  # 7,680
PATCH_HOP_SECONDS = PATCH_HOP_SAMPLES / SAMPLE_RATE  # 0.48
PATCH_SECONDS = PATCH_FRAMES * HOP / SAMPLE_RATE  # 0.96: the span a patch stands for
BLOCK_FRAMES = 6_000  # 60 s of frames per STFT in log_mel_in_blocks


def patch_count(samples: int) -> int:
    return 1 + math.ceil(max(0, samples - PATCH_SAMPLES) / PATCH_HOP_SAMPLES)


def pad_to_whole_patches(waveform: np.ndarray) -> np.ndarray:
    target = PATCH_SAMPLES + PATCH_HOP_SAMPLES * (patch_count(len(waveform)) - 1)
    return np.pad(np.asarray(waveform, dtype=np.float32), (0, target - len(waveform)))


@lru_cache(maxsize=1)
def periodic_hann() -> np.ndarray:
    n = np.arange(WINDOW, dtype=np.float32)
    return np.asarray(0.5 - 0.5 * np.cos(2 * np.float32(np.pi) * n / np.float32(WINDOW)), dtype=np.float32)


def hertz_to_mel(hertz: np.ndarray) -> np.ndarray:
    return np.asarray(np.float32(1127.0) * np.log1p(hertz / np.float32(700.0)), dtype=np.float32)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """(257, 64) float32, as tf.signal.linear_to_mel_weight_matrix computes it."""
    bins = FFT_LENGTH // 2 + 1
    linear = np.linspace(0.0, SAMPLE_RATE / 2, bins, dtype=np.float32)[1:]  # the DC bin gets no weight
    spectrogram_mel = hertz_to_mel(linear)[:, np.newaxis]
    edges = np.linspace(hertz_to_mel(np.float32(MEL_MIN_HZ)), hertz_to_mel(np.float32(MEL_MAX_HZ)),
                        MEL_BANDS + 2, dtype=np.float32)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (spectrogram_mel - lower) / (center - lower)
    falling = (upper - spectrogram_mel) / (upper - center)
    weights = np.maximum(np.float32(0), np.minimum(rising, falling))
    return np.pad(weights, ((1, 0), (0, 0))).astype(np.float32)


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """(frames, 64) float32 log-mel spectrogram of an already padded waveform."""
    windows = sliding_window_view(np.asarray(waveform, dtype=np.float32), WINDOW)[::HOP]
    # Windowed straight into FFT-length rows: rfft(n=FFT_LENGTH) copied every frame to pad it
    # (the same values; an hour's log-mel 0.56 -> 0.37 s). SciPy's FFT: 8 ms for a minute of
    # audio where NumPy's took 22 (both in float32).
    frames = np.zeros((len(windows), FFT_LENGTH), np.float32)
    np.multiply(windows, periodic_hann(), out=frames[:, :WINDOW])
    magnitude = np.abs(scipy.fft.rfft(frames, workers=1))  # float32 from complex64
    return np.asarray(np.log(magnitude @ mel_matrix() + np.float32(LOG_OFFSET)), dtype=np.float32)


def log_mel_in_blocks(waveform: np.ndarray, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """log_mel of a long padded waveform, `block_frames` frames at a time: the same frames,
    with the STFT's working memory that of one block (a whole 14-minute soundscape at once
    held ~0.5 GiB)."""
    total = 1 + (len(waveform) - WINDOW) // HOP
    return np.concatenate([log_mel(waveform[first * HOP:(min(total, first + block_frames) - 1) * HOP + WINDOW])
                           for first in range(0, total, block_frames)])


def log_mel_patches(waveform: np.ndarray) -> np.ndarray:
    """(N, 96, 64) float32: what YAMNet's CNN reads for this 16 kHz mono waveform."""
    return patches_from_frames(log_mel(pad_to_whole_patches(waveform)))


def patches_from_frames(spectrogram: np.ndarray) -> np.ndarray:
    """(N, 96, 64) float32 patches of a padded waveform's log-mel frames."""
    windows = sliding_window_view(spectrogram, PATCH_FRAMES, axis=0)[::PATCH_HOP_FRAMES]  # (N, 64, 96)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))
