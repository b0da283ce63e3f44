"""A retrain's event detector: the training split's audio read back, soundscapes built and
embedded, the detector fitted and calibrated, saved into the version being made.

Runs in the retrain's process (CLI or daemon) with its own ONNX Runtime session; a
version without a detector (too few recordings, no converted YAMNet body, an error) is
still a version, and `detect` falls back to the clip model over windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import EventDetector, onset_features, patch_features
from ecosight_daemon.artifacts.split_rule import Split
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.config import Settings
from ecosight_daemon.embedding.frontend import SAMPLE_RATE
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.training.dataset import Snapshot
from ecosight_daemon.training.event_detector import (
    MIN_PART_SECONDS,
    PARTS,
    SECONDS_PER_EVENT,
    LabeledAudio,
    PartScores,
    false_alarms_and_found,
    train_event_detector,
)
from ecosight_daemon.training.event_mixing import build_soundscape, loudest_stretch
from ecosight_daemon.util.digest import sha256_of_bytes

logger = logging.getLogger(__name__)
MAX_CLIPS_PER_CLASS = 150  # bounds memory and time whatever the corpus's size
MAX_BACKGROUND_S = 30.0
MAX_EVENT_S = 6.0


def train_detector_into(settings: Settings, snapshot: Snapshot, staging: Path,
                        progress: Callable[[str], None] = lambda what: None,
                        incumbent_dir: Path | None = None) -> dict[str, Any]:
    """Train and save the detector into `staging`; returns its figures or {"skipped": reason}.

    The figures include `test_split`: the new detector and the current version's (in
    `incumbent_dir`) on one soundscape built from the gate's test split, side by side."""
    d = settings.detection
    background, priority = d.background_class, settings.training.priority_class
    if not d.train_detector:
        return {"skipped": "[detection] train_detector = false"}
    if background not in snapshot.classes:
        return {"skipped": f"no {background!r} class: no background to build soundscapes from"}
    learnable = [s for s in snapshot.samples if s.split is not Split.TEST]
    for needed in (background, priority):
        groups = {s.group for s in learnable if s.label == needed}
        if needed in snapshot.classes and len(groups) < PARTS:
            return {"skipped": f"{needed!r} has {len(groups)} source recording(s) outside the test split; the "
                    f"detector's calibration needs {PARTS}"}
    from ecosight_daemon.embedding.onnx_conversion import OnnxUnavailable
    from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder

    try:
        embedder = OnnxEmbedder.load(settings.embedding.yamnet_handle, settings.paths.models_dir,
                                     settings.embedding.yamnet_sha256)
    except OnnxUnavailable as exc:
        return {"skipped": f"ONNX Runtime cannot run YAMNet here ({exc})"}
    if embedder.model_id != snapshot.embedding_model_id:
        return {"skipped": f"YAMNet here is {embedder.model_id}, the snapshot's embeddings are "
                f"{snapshot.embedding_model_id}"}
    clips = _read_clips(settings.paths.audio_dir, learnable, background, seed=len(learnable))
    detector = train_event_detector(clips, embedder.embed, embedder.audioset_head(), snapshot.classes, background,
                                    priority, d.false_alarms_per_hour, seed=len(learnable), progress=progress)
    detector.save(staging / files.EVENT_DETECTOR)
    logger.info("event detector: threshold %.3f for <= %g false alarms/hour out of fold (%s)", detector.threshold,
                d.false_alarms_per_hour, detector.figures)
    progress("event detector: candidate and current model on the test split's soundscape")
    detectors = {"candidate": detector}
    if incumbent_dir is not None and (incumbent_dir / files.EVENT_DETECTOR).is_file():
        detectors["incumbent"] = EventDetector.load(incumbent_dir / files.EVENT_DETECTOR)
    test = [s for s in snapshot.samples if s.split is Split.TEST]
    return {**detector.figures, "test_split": _on_test_split(
        _read_clips(settings.paths.audio_dir, test, background, seed=len(test)), embedder, background, priority,
        detectors)}


def _on_test_split(clips: list[LabeledAudio], embedder: Any, background: str, priority: str,
                   detectors: dict[str, EventDetector]) -> dict[str, Any]:
    """Each detector at its own threshold on one soundscape of the test split's clips (short:
    the test split is small, so these figures are coarse; hours and shots say how coarse)."""
    backgrounds = [c.waveform for c in clips if c.label == background]
    events = [(c.label, c.group, c.waveform) for c in clips if c.label != background]
    shots = sum(label == priority for label, _, _ in events)
    if not backgrounds or not shots:
        return {"skipped": f"the test split holds no {background!r} clip or no {priority!r} clip"}
    rng = np.random.default_rng(len(clips))
    scape = build_soundscape(backgrounds, events, max(MIN_PART_SECONDS, SECONDS_PER_EVENT * len(events) + 7), rng)
    features = patch_features(embedder.embed(scape.waveform), onset_features(scape.waveform), embedder.audioset_head())
    figures: dict[str, Any] = {"hours": round(scape.hours, 4), "shots": shots}
    for name, detector in detectors.items():
        if priority not in detector.classes:
            continue
        margins = detector.margins(features)[:, detector.classes.index(priority)]
        false_alarms, found = false_alarms_and_found(PartScores(scape.events, scape.hours, margins),
                                                     detector.threshold, priority)
        figures[name] = {"recall": round(len(found) / shots, 4), "false_alarms": false_alarms,
                         "false_alarms_per_hour": round(false_alarms / scape.hours, 2), "found": sorted(found)}
    return figures


def test_split_summary(figures: dict[str, Any] | None) -> str:
    """The gate's detection figures in words, for its reason ("" when there are none)."""
    test = (figures or {}).get("test_split") or {}
    if "candidate" not in test:
        return ""
    before = test.get("incumbent")

    def pair(key: str) -> str:
        now = f"{test['candidate'][key]:.2f}"
        return f"{before[key]:.2f} -> {now}" if before else now

    return (f"; detection on a {test['hours'] * 60:.0f}-minute soundscape of the test split ({test['shots']} shots):"
            f" gun-shot recall {pair('recall')}, false alarms per hour {pair('false_alarms_per_hour')}")


def _read_clips(audio_dir: Path, samples: list[Any], background: str, seed: int) -> list[LabeledAudio]:
    """At most MAX_CLIPS_PER_CLASS per class (a seeded draw), each cut to what mixing uses;
    a file that changed since it was embedded or cannot be read is left out."""
    rng = np.random.default_rng(seed)
    clips: list[LabeledAudio] = []
    for label in sorted({s.label for s in samples}):
        ofclass = [s for s in samples if s.label == label]
        chosen = [ofclass[i] for i in sorted(rng.permutation(len(ofclass))[:MAX_CLIPS_PER_CLASS])]
        for sample in chosen:
            try:
                data = (audio_dir / sample.path).read_bytes()
                if sha256_of_bytes(data) != sample.sha256:
                    continue
                waveform = decode_audio(data, 3600).waveform
            except (OSError, AudioDecodeError) as exc:
                logger.info("event detector: %s left out (%s)", sample.path, exc)
                continue
            keep = MAX_BACKGROUND_S if label == background else MAX_EVENT_S
            if len(waveform) > keep * SAMPLE_RATE:
                waveform = loudest_stretch(waveform, keep)[0]
            clips.append(LabeledAudio(label, sample.group, waveform))
    return clips
