"""Varied copies of an event clip, as another gun, another distance or another place would
sound: what the shot CNN learns from, so a few dozen recorded shots stand for more guns than
themselves (benchmarks/detection_cnn.py `vary` measures it).

A copy is played faster or slower (pitch and length together: a smaller or larger calibre,
another recorder's clock), given a room or a forest (a decaying noise tail) and a colour
(a tilt of the spectrum, dB per octave, as a far-off or muffled recorder hears it). Every
event class is varied alike, confusers too, so how a copy was varied tells the CNN nothing
about whether it is a shot.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve, resample_poly

from ecosight_daemon.audio import TARGET_SAMPLE_RATE as RATE

SPEED = (0.85, 1.2)  # playback rate
REVERB_SHARE = 0.5  # of copies given a decaying tail
DECAY_S = (0.15, 1.2)  # time for the tail to fall 60 dB
TAIL_DB = (-20.0, -6.0)  # the tail's level against the dry sound
TILT_DB_PER_OCTAVE = (-3.0, 2.0)
TILT_PIVOT_HZ = 1000.0


def varied(waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One varied copy of `waveform` (16 kHz mono), at its original peak level."""
    x = np.asarray(waveform, np.float32)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x.copy()
    x = played_at(x, float(rng.uniform(*SPEED)))
    if rng.random() < REVERB_SHARE:
        x = with_tail(x, float(rng.uniform(*DECAY_S)), float(rng.uniform(*TAIL_DB)), rng)
    x = tilted(x, float(rng.uniform(*TILT_DB_PER_OCTAVE)))
    return np.asarray(x * np.float32(peak / (float(np.max(np.abs(x))) + 1e-12)), np.float32)


def played_at(x: np.ndarray, rate: float) -> np.ndarray:
    """`x` played `rate` times as fast (shorter and higher above 1)."""
    down = max(1, round(100 * rate))
    return np.asarray(resample_poly(x, 100, down), np.float32)


def with_tail(x: np.ndarray, decay_s: float, tail_db: float, rng: np.random.Generator) -> np.ndarray:
    """`x` plus itself through exponentially decaying noise (decaying 60 dB in `decay_s`),
    the tail `tail_db` against the dry sound's energy; longer by the tail."""
    t = np.arange(int(decay_s * RATE)) / RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.91 * t / decay_s)
    response *= 10 ** (tail_db / 20) / (np.sqrt(np.sum(response ** 2)) + 1e-12)
    wet = fftconvolve(x.astype(np.float64), response)
    wet[:len(x)] += x
    return np.asarray(wet, np.float32)


def tilted(x: np.ndarray, db_per_octave: float) -> np.ndarray:
    """`x` with its spectrum tilted about TILT_PIVOT_HZ (flat below 100 Hz)."""
    spectrum = np.fft.rfft(x.astype(np.float64))
    hz = np.maximum(np.fft.rfftfreq(len(x), 1 / RATE), 100.0)
    spectrum *= 10 ** (db_per_octave * np.log2(hz / TILT_PIVOT_HZ) / 20)
    return np.asarray(np.fft.irfft(spectrum, len(x)), np.float32)


def through_recorder(waveform: np.ndarray, recorder_rate: int) -> np.ndarray:
    """`waveform` (16 kHz) as a recorder sampling at `recorder_rate` would have kept it: nothing
    above its Nyquist frequency (an AudioMoth set to 8 kHz keeps nothing above 4 kHz)."""
    from math import gcd

    step = gcd(RATE, recorder_rate)
    down = resample_poly(np.asarray(waveform, np.float32), recorder_rate // step, RATE // step)
    return np.asarray(resample_poly(down, RATE // step, recorder_rate // step)[:len(waveform)], np.float32)


def narrowband_stretches(waveform: np.ndarray, recorder_rate: int, stretch_s: float) -> np.ndarray:
    """`waveform` with every other `stretch_s` through a recorder at `recorder_rate` (the rest as it is)."""
    narrow = through_recorder(waveform, recorder_rate)
    out = np.array(waveform, np.float32)
    stretch = int(stretch_s * RATE)
    for start in range(stretch, len(out), 2 * stretch):
        out[start:start + stretch] = narrow[start:start + stretch]
    return out
