"""What a run's windows looked like: each window's guessed class and its scores. Kept to
choose review items (windows near the threshold, windows below it) and by benchmarks to
sweep the threshold; a 24 h recording is 180,000 windows (~3 MB with four classes)."""

from __future__ import annotations

import numpy as np


class WindowTrace:
    def __init__(self, classes: list[str], background: str, window_s: float) -> None:
        self.classes = classes
        self.background_index = classes.index(background) if background in classes else -1
        self.window_s = window_s
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._next = 0

    def add(self, first_window: int, labels: np.ndarray, scores: np.ndarray) -> None:
        if len(labels) == 0:
            return
        if first_window != self._next:  # windows arrive in order; a gap would misplace every later time
            raise ValueError(f"window {first_window} after {self._next}")
        self._labels.append(labels.astype(np.int16))
        self._scores.append(scores.astype(np.float32))
        self._next += len(labels)

    def scores(self) -> np.ndarray:
        """(windows, classes) scores in time order."""
        if not self._scores:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate(self._scores)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(guessed class, best non-background class, its score) per window, in time order."""
        if not self._labels:
            return np.zeros(0, np.int16), np.zeros(0, np.int16), np.zeros(0, np.float32)
        foreground = self.scores()
        if self.background_index >= 0:
            foreground[:, self.background_index] = -np.inf
        best = np.argmax(foreground, axis=1)
        return np.concatenate(self._labels), best.astype(np.int16), foreground[np.arange(len(best)), best]
