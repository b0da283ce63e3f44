"""What scores a recording: the current version's event detector when it has one, the clip
model over sliding windows otherwise. Shared by `detect` and the daemon's recordings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import EventDetector
from ecosight_daemon.detection.patch_scorer import PatchScorer
from ecosight_daemon.detection.window_scorer import WindowScorer
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.pooling import needs_audioset_head
from ecosight_daemon.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scoring:
    version: str
    classes: list[str]
    background: str
    parameters: dict[str, Any]  # for run.json: which scorer, at which operating point
    _model: Any
    _detector: EventDetector | None
    _head: Any
    _window_patches: int

    def scorer(self, site_offsets: np.ndarray | None = None) -> WindowScorer | PatchScorer:
        """A fresh scorer for one recording (scorers carry state from chunk to chunk), its
        classes' thresholds moved by `site_offsets` (event detector only)."""
        if self._detector is not None and self._head is not None:
            return PatchScorer(self._detector, self._head, site_offsets)
        return WindowScorer(self._model, self._head, self._window_patches)

    def base_thresholds(self) -> np.ndarray | None:
        """Each class's threshold before a site moves it; None when this version cannot learn
        sites (no event detector: the clip model over windows has no per-class margins)."""
        return self._detector.base_thresholds() if self._detector is not None else None

    def calibrated_class(self) -> int | None:
        """The class whose threshold a quiet site may also lower (the detector's priority class)."""
        return self._detector.calibrated_class if self._detector is not None else None


def current_scoring(registry: ModelRegistry, embedder: Embedder, background: str,
                    window_patches: int) -> Scoring | None:
    """The published version's scoring; None while there is no model."""
    model = registry.current_model()
    if model is None:
        return None
    version = str(model.version)
    detector_file = registry.version_dir(version) / files.EVENT_DETECTOR
    detector = EventDetector.load(detector_file) if detector_file.is_file() else None
    if detector is not None:
        # Its ONNX sessions (the `onnx` package's import alone ~0.4 s) are built while the first
        # chunks are read and embedded, not in front of the first chunk's scoring.
        threading.Thread(target=_warm_up, args=(detector,), name="ecosight-detector-warm-up", daemon=True).start()
    head = embedder.audioset_head() if detector is not None or needs_audioset_head(model.pooling) else None
    if detector is not None:
        parameters: dict[str, Any] = {
            "scorer": "event detector (per patch)", "window_s": PATCH_SECONDS, "hop_s": PATCH_HOP_SECONDS,
            "background_class": background, "priority_class": detector.priority_class,
            "threshold_log_odds": detector.threshold, "priority_scorer": detector.priority_scorer}
    else:
        parameters = {"scorer": "clip model over sliding windows (this version has no event detector)",
                      "window_patches": window_patches, "hop_s": PATCH_HOP_SECONDS, "background_class": background,
                      "pooling": model.pooling, "priority_threshold": model.threshold}
    return Scoring(version, list(model.classes), background, parameters, model, detector, head, window_patches)


def _warm_up(detector: EventDetector) -> None:
    try:
        detector.warm_up()
    except Exception:  # the first scoring builds them again, and its error is the one reported
        logger.debug("event detector not warmed up", exc_info=True)
