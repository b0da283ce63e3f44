"""Onset features over a stream of chunks: each chunk's patches compared with the audio
before them as they would be in the whole recording.

The last ONSET_CONTEXT_S of a chunk's audio (a whole number of hops) is kept and put in
front of the next chunk; a patch near a chunk's end sees less of its future than in a
whole-file run. A run resumed part-way is `prime`d with the audio just before its first patch.
"""

from __future__ import annotations

import math

import numpy as np

from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES
from ecosight_daemon.training.event_detector import ONSET_CONTEXT_S, onset_features

CONTEXT_HOPS = math.ceil(ONSET_CONTEXT_S * 16_000 / PATCH_HOP_SAMPLES)


class OnsetStream:
    def __init__(self) -> None:
        self._context = np.zeros(0, dtype=np.float32)  # a whole number of hops of audio before the next chunk

    def prime(self, before: np.ndarray) -> None:
        """The audio just before the next chunk's first patch (what a resumed run lost)."""
        keep = (len(before) // PATCH_HOP_SAMPLES) * PATCH_HOP_SAMPLES
        self._context = np.asarray(before[len(before) - keep:][-CONTEXT_HOPS * PATCH_HOP_SAMPLES:], np.float32)

    def feed(self, waveform: np.ndarray, patches: int) -> np.ndarray:
        """(patches, 4) onset features for a chunk of `patches` patches read from `waveform`."""
        if patches == 0:
            return np.zeros((0, 4), np.float32)
        context_patches = len(self._context) // PATCH_HOP_SAMPLES
        joined = np.concatenate([self._context, waveform])
        onsets = onset_features(joined)[context_patches:context_patches + patches]
        next_start = len(self._context) + patches * PATCH_HOP_SAMPLES
        self._context = joined[max(0, next_start - CONTEXT_HOPS * PATCH_HOP_SAMPLES):next_start]
        return onsets
