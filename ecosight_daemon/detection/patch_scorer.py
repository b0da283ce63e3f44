"""Scores over a stream of patches with a version's event detector: every 0.96 s patch
scored on its own (AudioSet logits and onset features), one hop apart.

The onset features compare a patch with the ~30 s around it; across chunk boundaries the
last ONSET_CONTEXT_S of the previous chunk's audio is kept and prepended, so a patch sees
the audio before it as it would in the whole recording (the audio after it only up to its
chunk's end: a patch near a chunk's end sees less of its future than in a whole-file run).
"""

from __future__ import annotations

import math

import numpy as np

from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.event_detector import (
    ONSET_CONTEXT_S,
    PATCH_S,
    EventDetector,
    onset_features,
    patch_features,
)

CONTEXT_HOPS = math.ceil(ONSET_CONTEXT_S * 16_000 / PATCH_HOP_SAMPLES)


class PatchScorer:
    """feed(patches, waveform) -> (first patch index, labels, per-class probabilities)."""

    window_s = PATCH_S

    def __init__(self, detector: EventDetector, head: AudiosetHead) -> None:
        self._detector = detector
        self._head = head
        self._context = np.zeros(0, dtype=np.float32)  # a whole number of hops of audio before the next chunk
        self._next_patch = 0

    def feed(self, patches: np.ndarray, waveform: np.ndarray, last: bool) -> tuple[int, np.ndarray, np.ndarray]:
        first = self._next_patch
        if len(patches) == 0:
            return first, np.zeros(0, dtype=np.int64), np.zeros((0, len(self._detector.classes)), np.float32)
        context_patches = len(self._context) // PATCH_HOP_SAMPLES
        joined = np.concatenate([self._context, waveform])
        onsets = onset_features(joined)[context_patches:context_patches + len(patches)]
        next_start = len(self._context) + len(patches) * PATCH_HOP_SAMPLES
        self._context = joined[max(0, next_start - CONTEXT_HOPS * PATCH_HOP_SAMPLES):next_start]
        self._next_patch += len(patches)
        margins = self._detector.margins(patch_features(patches, onsets, self._head))
        probabilities = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))  # p(class): margin is its log-odds
        return first, self._detector.labels(margins), probabilities.astype(np.float32)
