"""Scores over a stream of patches with a version's event detector: every 0.96 s patch
scored on its own (AudioSet logits, onset features and, for a detector with a shot CNN,
its spectrogram codes; see chunk_front_end.py), one hop apart.
A site's learned background (site_background.py) moves its classes' thresholds; the
patches' margins are counted for the site's next recordings, each alarm once."""

from __future__ import annotations

import numpy as np

from ecosight_daemon.artifacts.event_detector import EventDetector, patch_features
from ecosight_daemon.artifacts.score_tail import AlarmPeakHistogram
from ecosight_daemon.embedding.frontend import PATCH_SECONDS
from ecosight_daemon.pooling import AudiosetHead


class PatchScorer:
    """feed(patches, onsets, spectrograms) -> (first patch index, labels, per-class probabilities)."""

    window_s = PATCH_SECONDS

    def __init__(self, detector: EventDetector, head: AudiosetHead, site_offsets: np.ndarray | None = None) -> None:
        self._detector = detector
        self._head = head
        self._offsets = site_offsets  # per class, added to its threshold at this site (+ raised, - lowered)
        self._next_patch = 0
        self._peaks = AlarmPeakHistogram(len(detector.classes))

    @property
    def histogram(self) -> np.ndarray:
        """(classes, BINS): each class's alarm peaks so far (whole once the last patches are fed)."""
        return self._peaks.counts

    def feed(self, patches: np.ndarray, onsets: np.ndarray, spectrograms: np.ndarray,
             last: bool) -> tuple[int, np.ndarray, np.ndarray]:
        first = self._next_patch
        if len(patches) == 0:
            if last:
                self._peaks.add(np.zeros((0, len(self._detector.classes))), last)
            return first, np.zeros(0, dtype=np.int64), np.zeros((0, len(self._detector.classes)), np.float32)
        self._next_patch += len(patches)
        margins = self._detector.margins(patch_features(patches, onsets, self._head), spectrograms)
        self._peaks.add(margins, last)
        probabilities = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))  # p(class): margin is its log-odds
        at_site = margins if self._offsets is None else margins - self._offsets.astype(np.float32)
        return first, self._detector.labels(at_site), probabilities.astype(np.float32)
