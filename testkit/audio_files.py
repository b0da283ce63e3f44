"""Synthetic audio for tests: deterministic tones, noise and clicks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

WavWriter = Callable[..., Path]


def synthetic_signal(kind: str, seconds: float, rate: int, seed: int) -> np.ndarray:
    """Tones, noise or clicks in [-0.8, 0.8], deterministic for a seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    if kind == "tone":
        signal = 0.5 * np.sin(2 * np.pi * (300 + 50 * (seed % 20)) * t)
    elif kind == "noise":
        signal = 0.3 * rng.standard_normal(len(t))
    elif kind == "clicks":
        signal = np.zeros(len(t))
        signal[rng.integers(0, max(1, len(t)), size=max(1, int(seconds * 8)))] = 0.8
    else:
        raise ValueError(kind)
    return np.clip(signal, -0.8, 0.8).astype(np.float32)
