"""Training the event detector a retrain ships beside the clip classifier (what it is and
how it runs: artifacts/event_detector.py): it scores every 0.96 s patch of a long
recording, not pooled clips.

Features per patch: YAMNet's 521 AudioSet logits (from the cached embedding) and four
onset features from the log-mel frames (how far the loudest 10 ms stands above the last
~30 s, the steepest rise, the share of mel bands rising at once, the 90th percentile).
A class-balanced logistic regression learns them from soundscapes built out of the
training split (events mixed into backgrounds at random SNRs), with a patch labelled by
the event it holds (a gun shot: its loudest moment) and partial patches left out.

The priority class's threshold is chosen from data for a false-alarm budget per hour:
the soundscape is made in three parts from disjoint source recordings, each part scored
by a model fitted on the other two, and the threshold is the lowest at which those
out-of-fold parts raise no more false alarms per hour than the budget. YAMNet's own
gun-shot score is calibrated on the same parts; the fitted scorer ranks gun shots only
where its recall there is higher (artifacts/event_detector.py says how each runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.event_detector import (
    TRAINED_SCORER,
    YAMNET_GUNSHOT,
    YAMNET_SCORER,
    EventDetector,
    onset_features,
    patch_features,
)
from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS, SAMPLE_RATE
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.event_mixing import PlacedEvent, Soundscape, build_soundscape
from ecosight_daemon.training.logistic_head import fit_logistic

PARTS = 3
SECONDS_PER_EVENT = 8.0  # of soundscape per event mixed in (events are >= 6 s apart)
PRIORITY_COPIES = 1  # each priority-class clip is mixed in this many times per soundscape
MIN_PART_SECONDS = 60.0
REGULARIZATION_C = 0.001  # strong: a few thousand patches, 525 features, sites it never heard (docs/detection.md)
COLLAR_S = 0.5


def patch_labels(events: list[PlacedEvent], count: int, classes: list[str], background: str) -> np.ndarray:
    """Per patch: the class of the event it holds, the background class where none, -1 where
    it holds only part of one (left out of training)."""
    starts = np.arange(count) * PATCH_HOP_SECONDS
    labels = np.full(count, classes.index(background), np.int64)
    for e in events:
        labels[(starts < e.end_s) & (starts + PATCH_SECONDS > e.start_s)] = -1
    for e in events:
        if e.label not in classes:
            continue
        if e.label == background:  # a confuser mixed in: every patch it touches is background
            labels[(starts < e.end_s) & (starts + PATCH_SECONDS > e.start_s)] = classes.index(background)
            continue
        if e.label == "gun_shot" or e.end_s - e.start_s < PATCH_SECONDS + 0.4:
            holds = (starts <= e.peak_s - 0.05) & (starts + PATCH_SECONDS >= e.peak_s + 0.1)
        else:
            holds = (starts >= e.start_s - 0.2) & (starts + PATCH_SECONDS <= e.end_s + 0.2)
        labels[holds] = classes.index(e.label)
    return labels


@dataclass(frozen=True)
class LabeledAudio:
    label: str
    group: str
    waveform: np.ndarray
    impulsive: bool = False  # a short loud background clip (thunder, a branch): mixed in like an event
    confirmed: bool = False  # a clip a person confirmed on the Review page


@dataclass
class PartScores:
    events: list[PlacedEvent]
    hours: float
    scores: np.ndarray  # the priority class's margin per patch


def false_alarms_and_hits(part: PartScores, threshold: float, priority: str) -> tuple[int, int]:
    """(detected priority-class events overlapping no such event, such events found)."""
    false_alarms, found = false_alarms_and_found(part, threshold, priority)
    return false_alarms, len(found)


def false_alarms_and_found(part: PartScores, threshold: float, priority: str) -> tuple[int, set[int]]:
    """(false alarms, the indices among the part's priority-class events of those found)."""
    shots = [e for e in part.events if e.label == priority]
    above = np.flatnonzero(part.scores >= threshold)
    runs = np.split(above, np.flatnonzero(np.diff(above) > 2) + 1) if len(above) else []
    found: set[int] = set()
    false_alarms = 0
    for run in runs:
        start, end = run[0] * PATCH_HOP_SECONDS, run[-1] * PATCH_HOP_SECONDS + PATCH_SECONDS
        hits = [i for i, s in enumerate(shots) if start < s.end_s + COLLAR_S and end > s.start_s - COLLAR_S]
        found.update(hits)
        false_alarms += not hits
    return false_alarms, found


def calibrated_threshold(parts: list[PartScores], budget_per_hour: float, priority: str) -> float:
    """The lowest threshold at which the parts raise <= budget false alarms per hour."""
    hours = sum(p.hours for p in parts)
    candidates = np.unique(np.concatenate([np.quantile(p.scores, np.linspace(0.9, 1.0, 401)) for p in parts]))
    for threshold in candidates:
        if sum(false_alarms_and_hits(p, float(threshold), priority)[0] for p in parts) / hours <= budget_per_hour:
            return float(threshold)
    return float(candidates[-1]) + 1e-3


def train_event_detector(clips: list[LabeledAudio], embed: Callable[[np.ndarray], np.ndarray], head: AudiosetHead,
                         classes: list[str], background: str, priority: str, budget_per_hour: float,
                         seed: int = 0, progress: Callable[[str], None] = lambda what: None,
                         priority_copies: int = PRIORITY_COPIES, cover_background: bool = True) -> EventDetector:
    """Soundscapes in PARTS parts from disjoint source recordings, a threshold out of fold,
    then the detector fitted on every part."""
    rng = np.random.default_rng(seed)
    groups = sorted({c.group for c in clips})
    rng.shuffle(groups)
    parts: list[tuple[Soundscape, np.ndarray]] = []
    for k in range(PARTS):
        members = set(groups[k::PARTS])
        chosen = [c for c in clips if c.group in members]
        backgrounds = [c.waveform for c in chosen if c.label == background and not c.impulsive]
        events = [(c.label, c.group, c.waveform) for c in chosen if c.label != background or c.impulsive
                  for _ in range(priority_copies if c.label == priority else 1)]
        if not backgrounds:
            backgrounds = [c.waveform for c in clips if c.label == background and not c.impulsive] or \
                [c.waveform for c in clips if c.label == background]
        seconds = max(MIN_PART_SECONDS, SECONDS_PER_EVENT * len(events) + 7)
        if cover_background:  # every second of the part's background heard once: more hours to calibrate on
            seconds = max(seconds, sum(len(b) for b in backgrounds) / SAMPLE_RATE)
        progress(f"event detector: soundscape {k + 1} of {PARTS} ({len(events)} events, {seconds / 60:.0f} min)")
        scape = build_soundscape(backgrounds, events, seconds, rng)
        parts.append((scape, patch_features(embed(scape.waveform), onset_features(scape.waveform), head)))
    labels = [patch_labels(s.events, len(f), classes, background) for s, f in parts]

    def fit_on(indices: list[int]) -> LogisticFit:
        x = np.concatenate([parts[i][1] for i in indices])
        y = np.concatenate([labels[i] for i in indices])
        return fit_logistic(x[y >= 0], y[y >= 0], len(classes), REGULARIZATION_C)

    priority_in = priority in classes
    out_of_fold: list[PartScores] = []
    for k in range(PARTS):
        progress(f"event detector: out-of-fold scores {k + 1} of {PARTS}")
        twin = EventDetector(fit_on([i for i in range(PARTS) if i != k]), classes, background, priority, 0.0, {})
        margins = twin.margins(parts[k][1])
        out_of_fold.append(PartScores(parts[k][0].events, parts[k][0].hours,
                                      margins[:, classes.index(priority)] if priority_in else margins.max(axis=1)))
    trained = operating_point(out_of_fold, budget_per_hour, priority, priority_in)
    yamnet = operating_point([PartScores(scape.events, scape.hours, features[:, YAMNET_GUNSHOT])
                              for scape, features in parts], budget_per_hour, priority, priority_in)
    scorer, why = choose_priority_scorer(trained, yamnet, priority)
    point = trained if scorer == TRAINED_SCORER else yamnet
    figures = {"budget_false_alarms_per_hour": budget_per_hour, **point, "parts": PARTS,
               "source_recordings": len(groups), "priority_scorer": scorer, "priority_scorer_reason": why,
               "out_of_fold_by_scorer": {TRAINED_SCORER: trained, YAMNET_SCORER: yamnet}}
    progress("event detector: the shipped fit (every part)")
    return EventDetector(fit_on(list(range(PARTS))), classes, background, priority, float(point["threshold"]),
                         figures, scorer)


def operating_point(parts: list[PartScores], budget_per_hour: float, priority: str,
                    calibrate: bool = True) -> dict[str, Any]:
    """The calibrated threshold for the budget and what the parts show there."""
    threshold = calibrated_threshold(parts, budget_per_hour, priority) if calibrate else 0.0
    hours = sum(p.hours for p in parts)
    counted = [false_alarms_and_hits(p, threshold, priority) for p in parts]
    shots = sum(1 for p in parts for e in p.events if e.label == priority)
    found = sum(hits for _, hits in counted)
    return {"threshold": threshold, "out_of_fold_hours": round(hours, 4),
            "out_of_fold_false_alarms_per_hour": round(sum(fa for fa, _ in counted) / hours, 3) if hours else None,
            "out_of_fold_recall": round(found / shots, 4) if shots else None, "out_of_fold_events": shots}


def choose_priority_scorer(trained: dict[str, Any], yamnet: dict[str, Any], priority: str) -> tuple[str, str]:
    """The fitted scorer only where its out-of-fold recall at the budget beats YAMNet's own
    gun-shot score on the same soundscapes; otherwise the network it is built on."""
    ours, theirs = trained["out_of_fold_recall"], yamnet["out_of_fold_recall"]
    if ours is None or theirs is None:
        return TRAINED_SCORER, f"no {priority!r} events to compare the scorers on"
    if ours > theirs:
        return TRAINED_SCORER, f"trained recall {ours:.3f} beats YAMNet's gun-shot score's {theirs:.3f} out of fold"
    return YAMNET_SCORER, (f"trained recall {ours:.3f} does not beat YAMNet's gun-shot score's {theirs:.3f} out of "
                           "fold, so YAMNet's score ranks gun shots")
