"""A retrain's event detector: the training split's audio read back, soundscapes built and
embedded, the detector fitted and calibrated, saved into the version being made.

The retrain describes it (`detector_job`, in the daemon or the CLI) and the training process
runs it (`train_detector_into`) after the fit, with its own ONNX Runtime session, so the
audio and soundscapes it holds never enter the daemon's memory. A version without a
detector (too few recordings, no converted YAMNet body, an error) is still a version, and
`detect` falls back to the clip model over windows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import EventDetector, onset_features, patch_features
from ecosight_daemon.artifacts.shot_spectrogram import ShotSpectrogramModel, spectrogram_inputs
from ecosight_daemon.artifacts.split_rule import REVIEW_CLIP_MARK, Split
from ecosight_daemon.audio import decode_audio
from ecosight_daemon.config import Settings
from ecosight_daemon.embedding.frontend import SAMPLE_RATE
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.training.dataset import Snapshot
from ecosight_daemon.training.event_detector import (
    PARTS,
    SECONDS_PER_EVENT,
    FitCnn,
    LabeledAudio,
    train_event_detector,
)
from ecosight_daemon.training.event_mixing import build_soundscape, loudest_stretch
from ecosight_daemon.training.operating_point import PartScores, false_alarms_and_found
from ecosight_daemon.training.protocol import DetectorJob, DetectorSample
from ecosight_daemon.util import pause
from ecosight_daemon.util.digest import sha256_of_bytes

logger = logging.getLogger(__name__)
MAX_EVENT_S = 6.0
CONFIRMED = "confirmed:"  # marks a review clip's events in the test split's soundscape
CONFUSER_MAX_S = 10.0
CONFUSER_CREST_DB = 12.0
SENTINEL_SECONDS = 3600.0


def detector_job(settings: Settings, snapshot: Snapshot, staging: Path, incumbent_dir: Path | None) -> DetectorJob:
    """What the training process needs to train the version's detector."""
    return DetectorJob(
        str(staging), [DetectorSample(s.path, s.label, s.group, s.split.value, s.sha256) for s in snapshot.samples],
        list(snapshot.classes), settings.detection.background_class, settings.training.priority_class,
        settings.detection.false_alarms_per_hour, str(settings.paths.audio_dir), str(settings.paths.models_dir),
        settings.embedding.yamnet_handle, settings.embedding.yamnet_sha256, snapshot.embedding_model_id,
        str(incumbent_dir) if incumbent_dir is not None else "", settings.detection.confusers_per_hour,
        settings.detection.shot_cnn_epochs, settings.detection.context_trees)


def train_detector_into(job: DetectorJob, progress: Callable[[str], None] = lambda what: None) -> dict[str, Any]:
    """Train and save the detector into the job's staging folder; returns its figures or
    {"skipped": reason}.

    The figures include `test_split`: the new detector and the current version's (in
    `incumbent_dir`) on one soundscape built from the gate's test split, side by side."""
    background, priority = job.background, job.priority
    if background not in job.classes:
        return {"skipped": f"no {background!r} class: no background to build soundscapes from"}
    learnable = [s for s in job.samples if s.split != Split.TEST.value]
    for needed in (background, priority):
        groups = {s.group for s in learnable if s.label == needed}
        if needed in job.classes and len(groups) < PARTS:
            return {"skipped": f"{needed!r} has {len(groups)} source recording(s) outside the test split; the "
                    f"detector's calibration needs {PARTS}"}
    from ecosight_daemon.embedding.onnx_conversion import OnnxUnavailable
    from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder

    try:
        embedder = OnnxEmbedder.load(job.yamnet_handle, Path(job.models_dir), job.yamnet_sha256)
    except OnnxUnavailable as exc:
        return {"skipped": f"ONNX Runtime cannot run YAMNet here ({exc})"}
    if embedder.model_id != job.embedding_model_id:
        return {"skipped": f"YAMNet here is {embedder.model_id}, the snapshot's embeddings are "
                f"{job.embedding_model_id}"}
    audio_dir = Path(job.audio_dir)
    clips = read_clips(audio_dir, learnable, background, seed=len(learnable))
    pause.point("detector_training")
    detector = train_event_detector(clips, embedder.embed, embedder.audioset_head(), job.classes, background,
                                    priority, job.false_alarms_per_hour, seed=len(learnable), progress=progress,
                                    confusers_per_hour=job.confusers_per_hour, fit_cnn=cnn_fitter(job.shot_cnn_epochs),
                                    context_trees=job.context_trees)
    del clips  # the test split's clips are read next
    detector.save(Path(job.staging) / files.EVENT_DETECTOR)
    logger.info("event detector: threshold %.3f for <= %g false alarms/hour out of fold (%s)", detector.threshold,
                job.false_alarms_per_hour, detector.figures)
    progress("event detector: candidate and current model on the test split's soundscape")
    detectors = {"candidate": detector}
    incumbent_file = Path(job.incumbent_dir) / files.EVENT_DETECTOR if job.incumbent_dir else None
    if incumbent_file is not None and incumbent_file.is_file():
        detectors["incumbent"] = EventDetector.load(incumbent_file)
    test = [s for s in job.samples if s.split == Split.TEST.value]
    return {**detector.figures, "trained_in_process": os.getpid(), "test_split": _on_test_split(
        read_clips(audio_dir, test, background, seed=len(test)), embedder, background, priority, detectors)}


def cnn_fitter(epochs: int) -> FitCnn | None:
    """The shot CNN's fit (Keras: the training process's TensorFlow) at `epochs`; None at 0."""
    if epochs <= 0:
        return None
    from ecosight_daemon.training.shot_spectrogram_fit import fit_shot_spectrogram

    def fit(codes: np.ndarray, is_shot: np.ndarray, seed: int) -> ShotSpectrogramModel:
        return fit_shot_spectrogram(codes, is_shot, seed, epochs)

    return fit


def _on_test_split(clips: list[LabeledAudio], embedder: Any, background: str, priority: str,
                   detectors: dict[str, EventDetector]) -> dict[str, Any]:
    """Each detector at its own threshold on the gate's sentinel: a soundscape of at least
    SENTINEL_SECONDS built from the test split's clips, whose sources never enter training,
    so false alarms are counted over an hour of unseen background, not guessed from minutes
    (its shots are few: the test split is small; `shots` says how few)."""
    backgrounds = [c.waveform for c in clips if c.label == background and not c.impulsive]
    events = [(c.label, (CONFIRMED if c.confirmed else "") + c.group, c.waveform) for c in clips
              if c.label != background or c.impulsive]
    shots = sum(label == priority for label, _, _ in events)
    if not backgrounds or not shots:
        return {"skipped": f"the test split holds no {background!r} clip or no {priority!r} clip"}
    rng = np.random.default_rng(len(clips))
    scape = build_soundscape(backgrounds, events, max(SENTINEL_SECONDS, SECONDS_PER_EVENT * len(events) + 7), rng)
    features = patch_features(embedder.embed(scape.waveform), onset_features(scape.waveform), embedder.audioset_head())
    codes = spectrogram_inputs(scape.waveform) if any(d.reads_spectrograms for d in detectors.values()) else None
    placed = [e for e in scape.events if e.label == priority]
    figures: dict[str, Any] = {"hours": round(scape.hours, 4), "shots": shots,
                               "confirmed": [i for i, e in enumerate(placed) if e.source.startswith(CONFIRMED)]}
    for name, detector in detectors.items():
        if priority not in detector.classes:
            continue
        margins = detector.margins(features, codes)[:, detector.classes.index(priority)]
        false_alarms, found = false_alarms_and_found(PartScores(scape.events, scape.hours, margins),
                                                     detector.threshold, priority)
        figures[name] = {"recall": round(len(found) / shots, 4), "false_alarms": false_alarms,
                         "false_alarms_per_hour": round(false_alarms / scape.hours, 2), "found": sorted(found)}
    return figures


def sentinel_summary(figures: dict[str, Any] | None, budget_per_hour: float) -> str:
    """The gate's detection figures in words, for its reason ("" when there are none); says so
    when the candidate raises more false alarms there than the budget, which the gate lets
    through when the current version raises as many (it compares the two)."""
    test = (figures or {}).get("test_split") or {}
    if "candidate" not in test:
        return ""
    before = test.get("incumbent")

    def pair(key: str) -> str:
        now = f"{test['candidate'][key]:.2f}"
        return f"{before[key]:.2f} -> {now}" if before else now

    over = test["candidate"]["false_alarms_per_hour"] > budget_per_hour
    return (f"; detection on a {test['hours'] * 60:.0f}-minute soundscape of the test split ({test['shots']} shots):"
            f" gun-shot recall {pair('recall')}, false alarms per hour {pair('false_alarms_per_hour')}"
            + (f", over the budget of {budget_per_hour:g} an hour on that unseen background" if over else ""))


@dataclass(frozen=True)
class ClipBudget:
    """What one retrain reads for the detector: bounds its memory and time whatever the corpus."""

    per_event_class: int = 150  # clips of each event class (review clips always kept on top)
    background_file_s: float = 600.0  # of one background file (a site's long recording gives its first 10 min)
    background_total_s: float = 2400.0  # of background in all: 40 min, ~150 MB as float32


def read_clips(audio_dir: Path, samples: list[Any], background: str, seed: int,
               budget: ClipBudget = ClipBudget()) -> list[LabeledAudio]:
    """The clips the detector learns from, each cut to what mixing uses; a file that changed
    since it was embedded or cannot be read is left out. Background files of any length
    contribute up to the budget's seconds; a short impulsive background clip is a confuser,
    mixed in like an event. Review clips and confusers are always kept; other clips of an
    event class at most `budget.per_event_class` (a seeded draw)."""
    rng = np.random.default_rng(seed)
    clips: list[LabeledAudio] = []
    background_s = 0.0
    for label in sorted({s.label for s in samples}):
        ofclass = [s for s in samples if s.label == label]
        order = [ofclass[i] for i in rng.permutation(len(ofclass))]
        always = [s for s in order if REVIEW_CLIP_MARK in s.path]
        others = [s for s in order if REVIEW_CLIP_MARK not in s.path]
        chosen = always + (others if label == background else others[:budget.per_event_class])
        for sample in chosen:
            if label == background and background_s >= budget.background_total_s:
                break
            waveform = _read_waveform(audio_dir, sample, budget.background_file_s if label == background else 3600.0)
            if waveform is None:
                continue
            if label == background:
                impulsive = is_confuser(waveform)
                background_s += len(waveform) / SAMPLE_RATE
                clips.append(LabeledAudio(label, sample.group, waveform, impulsive))
                continue
            if len(waveform) > MAX_EVENT_S * SAMPLE_RATE:
                waveform = loudest_stretch(waveform, MAX_EVENT_S)[0]
            clips.append(LabeledAudio(label, sample.group, waveform, confirmed=REVIEW_CLIP_MARK in sample.path))
    return clips


def _read_waveform(audio_dir: Path, sample: Any, max_seconds: float) -> np.ndarray | None:
    try:
        data = (audio_dir / sample.path).read_bytes()
        if sha256_of_bytes(data) != sample.sha256:
            return None
        return decode_audio(data, 4 * 3600).waveform[:int(max_seconds * SAMPLE_RATE)]
    except (OSError, AudioDecodeError) as exc:
        logger.info("event detector: %s left out (%s)", sample.path, exc)
        return None


def is_confuser(waveform: np.ndarray) -> bool:
    """A short background clip whose loudest 50 ms stand CONFUSER_CREST_DB above its median:
    thunder, a firework, a branch breaking; what the detector must learn to refuse."""
    if len(waveform) > CONFUSER_MAX_S * SAMPLE_RATE or len(waveform) < SAMPLE_RATE // 4:
        return False
    frame = SAMPLE_RATE // 20
    energy = np.square(waveform[:len(waveform) // frame * frame].astype(np.float64)).reshape(-1, frame).mean(axis=1)
    return bool(10 * np.log10((energy.max() + 1e-12) / (np.median(energy) + 1e-12)) >= CONFUSER_CREST_DB)
