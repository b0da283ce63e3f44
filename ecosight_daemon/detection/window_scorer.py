"""Scores over a stream of patch embeddings: the published clip model applied to sliding
windows of `window_patches` patches (one hop apart), pooled exactly as it was trained."""

from __future__ import annotations

from typing import Any

import numpy as np

from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SAMPLES, SAMPLE_RATE
from ecosight_daemon.pooling import AudiosetHead, pool_clips


class WindowScorer:
    """feed(patches, onsets, spectrograms) -> (first window index, labels, scores) for the
    windows now complete (only the patches are read: the same interface as PatchScorer)."""

    def __init__(self, model: Any, head: AudiosetHead | None, window_patches: int) -> None:
        self._model = model  # a PublishedModel: .pooling, .probabilities, .labels
        self._head = head
        self.window_patches = window_patches
        self._carry = np.zeros((0, 0), dtype=np.float32)
        self._next_window = 0

    @property
    def window_s(self) -> float:
        return (self.window_patches - 1) * PATCH_HOP_SECONDS + PATCH_SAMPLES / SAMPLE_RATE

    def feed(self, patches: np.ndarray, onsets: np.ndarray, spectrograms: np.ndarray,
             last: bool) -> tuple[int, np.ndarray, np.ndarray]:
        size = self.window_patches
        joined = patches if self._carry.size == 0 else np.concatenate([self._carry, patches])
        count = max(0, len(joined) - size + 1)
        if count == 0 and last and self._next_window == 0 and len(joined):
            windows = [joined]  # a recording shorter than one window is one window
        else:
            windows = [joined[k:k + size] for k in range(count)]
        first = self._next_window
        self._carry = joined[max(0, len(joined) - size + 1):]
        self._next_window += len(windows)
        if not windows:
            return first, np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        features = pool_clips([np.asarray(w, dtype=np.float32) for w in windows], self._model.pooling, self._head)
        probabilities = np.asarray(self._model.probabilities(features), dtype=np.float32)
        return first, np.asarray(self._model.labels(features, probabilities)), probabilities
