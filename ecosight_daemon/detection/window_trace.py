"""What a run's windows looked like, compactly: each window's guessed class and its best
score among the classes that are not background. Kept to choose review items (windows
near the threshold, windows below it); a 24 h recording is 180,000 windows, ~1 MB."""

from __future__ import annotations

import numpy as np


class WindowTrace:
    def __init__(self, classes: list[str], background: str, window_s: float) -> None:
        self.classes = classes
        self.background_index = classes.index(background) if background in classes else -1
        self.window_s = window_s
        self._labels: list[np.ndarray] = []
        self._best_class: list[np.ndarray] = []
        self._best_score: list[np.ndarray] = []
        self._next = 0

    def add(self, first_window: int, labels: np.ndarray, scores: np.ndarray) -> None:
        if len(labels) == 0:
            return
        if first_window != self._next:  # windows arrive in order; a gap would misplace every later time
            raise ValueError(f"window {first_window} after {self._next}")
        foreground = scores.astype(np.float32, copy=True)
        if self.background_index >= 0:
            foreground[:, self.background_index] = -np.inf
        best = np.argmax(foreground, axis=1)
        self._labels.append(labels.astype(np.int16))
        self._best_class.append(best.astype(np.int16))
        self._best_score.append(foreground[np.arange(len(best)), best].astype(np.float32))
        self._next += len(labels)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(guessed class, best non-background class, its score) per window, in time order."""
        if not self._labels:
            return np.zeros(0, np.int16), np.zeros(0, np.int16), np.zeros(0, np.float32)
        return np.concatenate(self._labels), np.concatenate(self._best_class), np.concatenate(self._best_score)
