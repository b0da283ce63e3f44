"""Copies of an event as heard from afar, and audio as a narrower recorder keeps it.

The corpus's gun shots are mostly close and clean (recorded on purpose, or from sound
libraries); a shot at a field recorder is mostly far: its highs gone to the air and the
leaves, its boom smeared into a tail by the forest, a few dB above the site's own sound (the
corpus's six field-recorded shots, from Gabon and Belize, look like that, and YAMNet's
gun-shot logit on them is -3 to -10). A far copy is played a little faster or slower (another
gun), low-passed at a few hundred Hz to 1.5 kHz and given a decaying tail. Every event class is
made far alike, confusers too, so that a copy is far tells the CNN nothing about whether it is
a shot (benchmarks/detection_cnn.py `vary` measures it, on the field-recorded shots apart;
training/event_detector.py's CNN_FAR_SHARE says how many copies a retrain makes far: none yet).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from ecosight_daemon.audio import TARGET_SAMPLE_RATE as RATE

SPEED = (0.9, 1.1)  # playback rate
LOWPASS_HZ = (300.0, 1500.0)
DECAY_S = (0.4, 2.0)  # time for the tail to fall 60 dB
TAIL_DB = (-10.0, -2.0)  # the tail's level against the dry sound


def from_afar(waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One far copy of `waveform` (16 kHz mono), at its original peak level."""
    x = np.asarray(waveform, np.float32)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return np.zeros(len(x), np.float32)
    x = played_at(x, float(rng.uniform(*SPEED)))
    x = lowpassed(x, float(rng.uniform(*LOWPASS_HZ)))
    x = with_tail(x, float(rng.uniform(*DECAY_S)), float(rng.uniform(*TAIL_DB)), rng)
    return np.asarray(x * np.float32(peak / (float(np.max(np.abs(x))) + 1e-12)), np.float32)


def played_at(x: np.ndarray, rate: float) -> np.ndarray:
    """`x` played `rate` times as fast (shorter and higher above 1)."""
    down = max(1, round(100 * rate))
    return np.asarray(resample_poly(x, 100, down), np.float32)


def lowpassed(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    return np.asarray(sosfilt(butter(4, cutoff_hz, btype="low", fs=RATE, output="sos"), x), np.float32)


def with_tail(x: np.ndarray, decay_s: float, tail_db: float, rng: np.random.Generator) -> np.ndarray:
    """`x` plus itself through exponentially decaying noise (decaying 60 dB in `decay_s`),
    the tail `tail_db` against the dry sound's energy; longer by the tail."""
    t = np.arange(int(decay_s * RATE)) / RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.91 * t / decay_s)
    response *= 10 ** (tail_db / 20) / (np.sqrt(np.sum(response ** 2)) + 1e-12)
    wet = fftconvolve(x.astype(np.float64), response)
    wet[:len(x)] += x
    return np.asarray(wet, np.float32)

