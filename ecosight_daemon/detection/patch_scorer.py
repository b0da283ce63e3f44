"""Scores over a stream of patches with a version's event detector: every 0.96 s patch
scored on its own (AudioSet logits, onset features and, for a detector with a shot CNN,
its spectrogram codes; see chunk_front_end.py), one hop apart. A detector whose scorer
reads the patches either side (context trees) has each chunk's last CONTEXT_PATCHES scored
with the next chunk, once their later neighbours arrived (all of them with the last chunk).
A site's learned background (site_background.py) moves its classes' thresholds; the
patches' margins are counted for the site's next recordings, each alarm once."""

from __future__ import annotations

import numpy as np

from ecosight_daemon.artifacts.event_detector import CONTEXT_PATCHES, EventDetector, patch_context, patch_features
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
        self._hold = CONTEXT_PATCHES if detector.reads_context else 0
        # the patches kept from earlier chunks: `_scored` already scored (the next ones' earlier
        # neighbours), then those waiting for their later neighbours
        self._kept_features: np.ndarray | None = None
        self._kept_spectrograms: np.ndarray | None = None
        self._scored = 0

    @property
    def histogram(self) -> np.ndarray:
        """(classes, BINS): each class's alarm peaks so far (whole once the last patches are fed)."""
        return self._peaks.counts

    def feed(self, patches: np.ndarray, onsets: np.ndarray, spectrograms: np.ndarray | None,
             last: bool) -> tuple[int, np.ndarray, np.ndarray]:
        first = self._next_patch
        classes = len(self._detector.classes)
        features = patch_features(patches, onsets, self._head) if len(patches) else None
        context = None
        if self._hold:
            features, spectrograms, context = self._with_kept(features, spectrograms, last)
        if features is None or len(features) == 0:
            if last:
                self._peaks.add(np.zeros((0, classes)), last)
            return first, np.zeros(0, dtype=np.int64), np.zeros((0, classes), np.float32)
        self._next_patch += len(features)
        margins = self._detector.margins(features, spectrograms, context)
        self._peaks.add(margins, last)
        probabilities = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))  # p(class): margin is its log-odds
        at_site = margins if self._offsets is None else margins - self._offsets.astype(np.float32)
        return first, self._detector.labels(at_site), probabilities.astype(np.float32)

    def _with_kept(self, features: np.ndarray | None, spectrograms: np.ndarray | None,
                   last: bool) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(features, spectrograms, context) of the patches whose neighbours are all here now;
        keeps what the next chunk's patches need."""
        rows = _joined(self._kept_features, features)
        codes = _joined(self._kept_spectrograms, spectrograms if features is not None else None)
        if rows is None:
            return None, None, None
        end = len(rows) if last else max(self._scored, len(rows) - self._hold)
        context = patch_context(rows)[self._scored:end]  # rows[0]: the recording's first patch, or 3 before
        ready = slice(self._scored, end)
        keep_from = max(0, end - self._hold)
        self._kept_features = rows[keep_from:]
        self._kept_spectrograms = codes[keep_from:] if codes is not None else None
        self._scored = end - keep_from
        return rows[ready], codes[ready] if codes is not None else None, context


def _joined(kept: np.ndarray | None, new: np.ndarray | None) -> np.ndarray | None:
    if kept is None:
        return new
    return kept if new is None or len(new) == 0 else np.concatenate([kept, new])
