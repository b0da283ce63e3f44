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
out-of-fold parts raise no more false alarms per hour than the budget. The parts hold
their confusers far denser than a field hour does, so an alarm on one counts only as
much as `confusers_per_hour` says a real hour holds; and where the parts' hours are too
few to observe a few alarms at the budget, the threshold comes from the fitted tail of
their non-shot alarm peaks (each alarm counted once, at its loudest patch;
artifacts/score_tail.py), not from "above the loudest thing heard". YAMNet's own
gun-shot score is calibrated on the same parts; the fitted scorer ranks gun shots only
where its recall there is higher (artifacts/event_detector.py says how each runs).

Given `fit_cnn`, a third candidate: YAMNet's gun-shot score plus a small CNN's log-odds on
the patch's band-normalised log-mel (artifacts/shot_spectrogram.py). The CNN learns from
CNN_SOUNDSCAPES soundscapes of each part's sources with every shot mixed in CNN_SHOT_COPIES
times and every confuser CNN_CONFUSER_COPIES times (log-mel only: no YAMNet), scored out of fold on
the plain parts like the others, and fitted once more on all three only when it wins.
With `context_trees` (and the CNN), a fourth: that sum plus gradient-boosted trees on YAMNet's
view of the patch and the three either side (artifacts/context_trees.py), fitted on the plain
parts' patches two parts at a time and scored on the third like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.context_trees import ContextTrees
from ecosight_daemon.artifacts.event_detector import (
    TRAINED_SCORER,
    YAMNET_GUNSHOT,
    YAMNET_PLUS_CNN_PLUS_TREES_SCORER,
    YAMNET_PLUS_CNN_SCORER,
    YAMNET_SCORER,
    EventDetector,
    onset_features,
    patch_context,
    patch_features,
)
from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.artifacts.score_tail import (
    ALARM_GAP_PATCHES,
    BINS,
    MIN_ALARMS_OBSERVED,
    alarm_peaks,
    tail_threshold,
    weighted_histogram,
)
from ecosight_daemon.artifacts.shot_spectrogram import ShotSpectrogramModel, spectrogram_inputs
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS, SAMPLE_RATE
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.context_trees_fit import fit_context_trees
from ecosight_daemon.training.event_mixing import PlacedEvent, Soundscape, build_soundscape
from ecosight_daemon.training.event_variation import from_afar
from ecosight_daemon.training.logistic_head import fit_logistic

PARTS = 3
SECONDS_PER_EVENT = 8.0  # of soundscape per event mixed in (events are >= 6 s apart)
PRIORITY_COPIES = 1  # each priority-class clip is mixed in this many times per soundscape
MIN_PART_SECONDS = 60.0
REGULARIZATION_C = 0.001  # strong: a few thousand patches, 525 features, sites it never heard (docs/detection.md)
COLLAR_S = 0.5
CONFUSERS_PER_HOUR = 25.0  # loud non-shot impulses a field hour holds (the field recordings: 25)
RANKING_BUDGETS = (1.0, 2.0, 5.0, 10.0)  # multiples of the budget at which the scorers' ranking is compared
CNN_SHOT_COPIES = 4  # benchmarks/detection_cnn.py: more copies of the few shots, more for the CNN to learn
CNN_CONFUSER_COPIES = 2
CNN_SOUNDSCAPES = 1  # per part: with 2 the CNN lost the out-of-fold choice to YAMNet (docs/detection.md)
# Of the copies of each event heard from afar (training/event_variation.py). 0.5 ranked a little better in
# `detection_cnn vary` (15 folds) but worse end to end in `detection` (seeds 42 and 1): not shipped (docs/detection.md).
CNN_FAR_SHARE = 0.0
FitCnn = Callable[[np.ndarray, np.ndarray, int], ShotSpectrogramModel]  # (codes, is_shot, seed) -> CNN


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
    confuser_weight: float = 1.0  # what an alarm on a mixed-in confuser counts for (see confuser_weight)


def confuser_weight(events: list[PlacedEvent], hours: float, background: str, confusers_per_hour: float) -> float:
    """A part holds its confusers (background-class events) denser than a field hour does: an
    alarm on one counts as the share of them a real hour would hold (1: as many or fewer;
    confusers_per_hour 0: every alarm counts whole)."""
    mixed = sum(e.label == background for e in events)
    if not mixed or confusers_per_hour <= 0:
        return 1.0
    return min(1.0, confusers_per_hour * hours / mixed)


def false_alarms_and_hits(part: PartScores, threshold: float, priority: str) -> tuple[int, int]:
    """(detected priority-class events overlapping no such event, such events found)."""
    false_alarms, found = false_alarms_and_found(part, threshold, priority)
    return false_alarms, len(found)


def false_alarms_and_found(part: PartScores, threshold: float, priority: str) -> tuple[int, set[int]]:
    """(false alarms, the indices among the part's priority-class events of those found)."""
    alarms, found = _alarms(part, threshold, priority)
    return len(alarms), found


def weighted_false_alarms(part: PartScores, threshold: float, priority: str, background: str) -> float:
    """The part's false alarms, each on a mixed-in confuser counted at the part's confuser weight."""
    confusers = [e for e in part.events if e.label == background]
    return sum(part.confuser_weight if any(_overlaps(start, end, c) for c in confusers) else 1.0
               for start, end in _alarms(part, threshold, priority)[0])


def _alarms(part: PartScores, threshold: float, priority: str) -> tuple[list[tuple[float, float]], set[int]]:
    """(the false alarms' spans, the indices among the part's priority-class events of those found)."""
    shots = [e for e in part.events if e.label == priority]
    above = np.flatnonzero(part.scores >= threshold)
    runs = np.split(above, np.flatnonzero(np.diff(above) > ALARM_GAP_PATCHES) + 1) if len(above) else []
    found: set[int] = set()
    alarms = []
    for run in runs:
        start, end = run[0] * PATCH_HOP_SECONDS, run[-1] * PATCH_HOP_SECONDS + PATCH_SECONDS
        hits = [i for i, s in enumerate(shots) if _overlaps(start, end, s)]
        found.update(hits)
        if not hits:
            alarms.append((start, end))
    return alarms, found


def _overlaps(start: float, end: float, event: PlacedEvent) -> bool:
    return start < event.end_s + COLLAR_S and end > event.start_s - COLLAR_S


def calibrated_threshold(parts: list[PartScores], budget_per_hour: float, priority: str,
                         background: str = "") -> tuple[float, str]:
    """The lowest threshold at which the parts raise <= budget false alarms per hour (confusers
    weighted); from the fitted tail of their non-shot patches where too few hours; and how."""
    hours = sum(p.hours for p in parts)
    if hours * budget_per_hour < MIN_ALARMS_OBSERVED:
        return _tail_threshold(parts, budget_per_hour, priority, background), (
            f"fitted tail ({hours:.2f} h out of fold: too few to observe {MIN_ALARMS_OBSERVED} alarms at the budget)")
    candidates = np.unique(np.concatenate([np.quantile(p.scores, np.linspace(0.9, 1.0, 401)) for p in parts]))
    for threshold in candidates:
        if sum(weighted_false_alarms(p, float(threshold), priority, background) for p in parts) / hours \
                <= budget_per_hour:
            return float(threshold), "counted"
    return float(candidates[-1]) + 1e-3, "counted (above every score)"


def _tail_threshold(parts: list[PartScores], budget_per_hour: float, priority: str, background: str) -> float:
    """The fitted tail of the alarm peaks away from a shot, a confuser's at its weight."""
    histogram = np.zeros(BINS)
    for part in parts:
        starts = np.arange(len(part.scores)) * PATCH_HOP_SECONDS
        weights = alarm_peaks(part.scores).astype(np.float64)  # each alarm counted once
        for event in part.events:
            near = (starts < event.end_s + COLLAR_S) & (starts + PATCH_SECONDS > event.start_s - COLLAR_S)
            if event.label == priority:
                weights[near] = 0.0
            elif event.label == background:
                weights[near] = np.minimum(weights[near], part.confuser_weight)
        histogram += weighted_histogram(part.scores, weights)
    return tail_threshold(histogram, sum(p.hours for p in parts), budget_per_hour)


def train_event_detector(clips: list[LabeledAudio], embed: Callable[[np.ndarray], np.ndarray], head: AudiosetHead,
                         classes: list[str], background: str, priority: str, budget_per_hour: float,
                         seed: int = 0, progress: Callable[[str], None] = lambda what: None,
                         priority_copies: int = PRIORITY_COPIES, cover_background: bool = True,
                         confusers_per_hour: float = CONFUSERS_PER_HOUR,
                         fit_cnn: FitCnn | None = None, keep_cnn: bool = False,
                         context_trees: bool = True) -> EventDetector:
    """Soundscapes in PARTS parts from disjoint source recordings, a threshold out of fold,
    then the detector fitted on every part (the CNN and trees too where they won, or
    `keep_cnn`: a benchmark comparing them)."""
    rng = np.random.default_rng(seed)
    groups = sorted({c.group for c in clips})
    rng.shuffle(groups)
    parts: list[tuple[Soundscape, np.ndarray]] = []
    part_clips: list[list[LabeledAudio]] = []
    for k in range(PARTS):
        members = set(groups[k::PARTS])
        chosen = [c for c in clips if c.group in members]
        backgrounds = _backgrounds_of(chosen, clips, background)
        events = [(c.label, c.group, c.waveform) for c in chosen if c.label != background or c.impulsive
                  for _ in range(priority_copies if c.label == priority else 1)]
        seconds = max(MIN_PART_SECONDS, SECONDS_PER_EVENT * len(events) + 7)
        if cover_background:  # every second of the part's background heard once: more hours to calibrate on
            seconds = max(seconds, sum(len(b) for b in backgrounds) / SAMPLE_RATE)
        progress(f"event detector: soundscape {k + 1} of {PARTS} ({len(events)} events, {seconds / 60:.0f} min)")
        scape = build_soundscape(backgrounds, events, seconds, rng)
        parts.append((scape, patch_features(embed(scape.waveform), onset_features(scape.waveform), head)))
        part_clips.append(chosen)
    labels = [patch_labels(s.events, len(f), classes, background) for s, f in parts]
    weights = [confuser_weight(scape.events, scape.hours, background, confusers_per_hour) for scape, _ in parts]

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
                                      margins[:, classes.index(priority)] if priority_in else margins.max(axis=1),
                                      weights[k]))
    yamnet_scores = [features[:, YAMNET_GUNSHOT] for _, features in parts]
    points = {TRAINED_SCORER: operating_point(out_of_fold, budget_per_hour, priority, priority_in, background),
              YAMNET_SCORER: operating_point([PartScores(scape.events, scape.hours, scores, weight) for (scape, _),
                                              scores, weight in zip(parts, yamnet_scores, weights, strict=True)],
                                             budget_per_hour, priority, priority_in, background)}
    cnn_training: list[tuple[np.ndarray, np.ndarray]] = []
    if fit_cnn is not None and priority_in:
        cnn_training = [cnn_training_patches(chosen, clips, classes, background, priority, seed * 10 + k)
                        for k, chosen in enumerate(part_clips)]
        cnn_scores = []
        for k in range(PARTS):
            progress(f"event detector: the shot CNN out of fold {k + 1} of {PARTS}")
            cnn = fit_cnn(*_joined([cnn_training[i] for i in range(PARTS) if i != k]), seed + k)
            cnn_scores.append(yamnet_scores[k] + cnn.log_odds(spectrogram_inputs(parts[k][0].waveform)))
        points[YAMNET_PLUS_CNN_SCORER] = operating_point(
            [PartScores(scape.events, scape.hours, scores, weight) for (scape, _), scores, weight
             in zip(parts, cnn_scores, weights, strict=True)], budget_per_hour, priority, priority_in, background)
    fit_trees: Callable[[list[int]], ContextTrees] | None = None
    shots_in = [int((part_labels == classes.index(priority)).sum()) if priority_in else 0 for part_labels in labels]
    if cnn_training and context_trees and all(sum(shots_in) > shots for shots in shots_in):  # shots to learn from
        contexts = [patch_context(features) for _, features in parts]

        def fit_trees(indices: list[int]) -> ContextTrees:
            x, y = np.concatenate([contexts[i] for i in indices]), np.concatenate([labels[i] for i in indices])
            return fit_context_trees(x[y >= 0], y[y >= 0] == classes.index(priority), seed + len(indices))

        trees_scores = []
        for k in range(PARTS):
            progress(f"event detector: the context trees out of fold {k + 1} of {PARTS}")
            trees_scores.append(cnn_scores[k] + fit_trees([i for i in range(PARTS) if i != k]).log_odds(contexts[k]))
        points[YAMNET_PLUS_CNN_PLUS_TREES_SCORER] = operating_point(
            [PartScores(scape.events, scape.hours, scores, weight) for (scape, _), scores, weight
             in zip(parts, trees_scores, weights, strict=True)], budget_per_hour, priority, priority_in, background)
    scorer, why = choose_priority_scorer(points, priority)
    point = points[scorer]
    figures = {"budget_false_alarms_per_hour": budget_per_hour, **point, "parts": PARTS,
               "confusers_per_hour": confusers_per_hour, "confuser_weights": [round(w, 4) for w in weights],
               "source_recordings": len(groups), "priority_scorer": scorer, "priority_scorer_reason": why,
               "out_of_fold_by_scorer": points}
    progress("event detector: the shipped fit (every part)")
    shipped_cnn, shipped_trees = None, None
    adds_cnn = scorer in (YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER)
    if fit_cnn is not None and cnn_training and (adds_cnn or keep_cnn):
        progress("event detector: the shipped shot CNN (every part)")
        shipped_cnn = fit_cnn(*_joined(cnn_training), seed + PARTS)
    if fit_trees is not None and (scorer == YAMNET_PLUS_CNN_PLUS_TREES_SCORER or keep_cnn):
        progress("event detector: the shipped context trees (every part)")
        shipped_trees = fit_trees(list(range(PARTS)))
    return EventDetector(fit_on(list(range(PARTS))), classes, background, priority, float(point["threshold"]),
                         figures, scorer, shipped_cnn, shipped_trees)


def _backgrounds_of(chosen: list[LabeledAudio], clips: list[LabeledAudio], background: str) -> list[np.ndarray]:
    """The part's own background recordings; every one's where the part has none."""
    return [c.waveform for c in chosen if c.label == background and not c.impulsive] or \
        [c.waveform for c in clips if c.label == background and not c.impulsive] or \
        [c.waveform for c in clips if c.label == background]


def cnn_training_patches(chosen: list[LabeledAudio], clips: list[LabeledAudio], classes: list[str], background: str,
                         priority: str, seed: int, far_share: float = CNN_FAR_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(codes, is_shot) of CNN_SOUNDSCAPES soundscapes of one part's sources for the CNN to learn
    from: in each, every shot CNN_SHOT_COPIES times, every confuser CNN_CONFUSER_COPIES times, the
    other events once, `far_share` of the copies heard from afar; patches holding part of an event left out."""
    copies = {priority: CNN_SHOT_COPIES, background: CNN_CONFUSER_COPIES}
    events = [(c.label, c.group, c.waveform) for c in chosen if c.label != background or c.impulsive
              for _ in range(copies.get(c.label, 1))]
    rng = np.random.default_rng(seed)
    afar = np.random.default_rng([seed, 1])  # its own draws: the same placements however many are far
    pieces = []
    for _ in range(CNN_SOUNDSCAPES):
        scape = build_soundscape(_backgrounds_of(chosen, clips, background), events,
                                 max(MIN_PART_SECONDS, SECONDS_PER_EVENT * len(events) + 7), rng,
                                 vary=lambda clip: from_afar(clip, afar) if afar.random() < far_share else clip)
        codes = spectrogram_inputs(scape.waveform)
        labels = patch_labels(scape.events, len(codes), classes, background)
        pieces.append((codes[labels >= 0], (labels[labels >= 0] == classes.index(priority)).astype(np.float32)))
    return _joined(pieces)


def _joined(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([codes for codes, _ in pieces]), np.concatenate([y for _, y in pieces])


def operating_point(parts: list[PartScores], budget_per_hour: float, priority: str,
                    calibrate: bool = True, background: str = "") -> dict[str, Any]:
    """The calibrated threshold for the budget and what the parts show there."""
    threshold, how = calibrated_threshold(parts, budget_per_hour, priority, background) if calibrate \
        else (0.0, "none: no priority class")
    hours = sum(p.hours for p in parts)
    counted = [false_alarms_and_hits(p, threshold, priority) for p in parts]
    weighted = sum(weighted_false_alarms(p, threshold, priority, background) for p in parts)
    shots = sum(1 for p in parts for e in p.events if e.label == priority)
    found = sum(hits for _, hits in counted)
    return {"threshold": threshold, "calibration": how, "out_of_fold_hours": round(hours, 4),
            "out_of_fold_false_alarms_per_hour": round(sum(fa for fa, _ in counted) / hours, 3) if hours else None,
            "out_of_fold_false_alarms_per_hour_confusers_weighted": round(weighted / hours, 3) if hours else None,
            "out_of_fold_recall": round(found / shots, 4) if shots else None, "out_of_fold_events": shots,
            "out_of_fold_ranking_recall": ranking_recall(parts, budget_per_hour, priority, background)}


def ranking_recall(parts: list[PartScores], budget_per_hour: float, priority: str, background: str) -> float | None:
    """How well a scorer ranks shots above everything else near the budget, free of the tail
    fit's noise: the mean over RANKING_BUDGETS x the budget of the best recall at a threshold
    whose false alarms per hour (confusers weighted), counted on the out-of-fold parts, stay
    within it. At the calibrated point alone every cautious scorer finds almost nothing, and
    which one finds one shot more is chance."""
    shots = sum(1 for p in parts for e in p.events if e.label == priority)
    hours = sum(p.hours for p in parts)
    if not shots or not hours:
        return None
    candidates = np.unique(np.concatenate([np.quantile(p.scores, np.linspace(0.95, 1.0, 101)) for p in parts]))
    rates = np.array([sum(weighted_false_alarms(p, float(t), priority, background) for p in parts) / hours
                      for t in candidates])
    recalls = np.array([sum(false_alarms_and_hits(p, float(t), priority)[1] for p in parts) / shots
                        for t in candidates])
    best = [float(recalls[rates <= times * budget_per_hour].max(initial=0.0)) for times in RANKING_BUDGETS]
    return round(float(np.mean(best)), 4)


def choose_priority_scorer(points: dict[str, dict[str, Any]], priority: str) -> tuple[str, str]:
    """YAMNet's own gun-shot score unless a candidate ranks shots better out of fold on the same
    soundscapes (ranking_recall; and better than every simpler candidate: the fitted scorer,
    then YAMNet + CNN, then YAMNet + CNN + context trees); a trained detector must beat the network it is built on."""
    ranked: dict[str, float] = {name: point["out_of_fold_ranking_recall"] for name, point in points.items()
                                if point.get("out_of_fold_ranking_recall") is not None}
    if YAMNET_SCORER not in ranked:
        return TRAINED_SCORER, f"no {priority!r} events to compare the scorers on"
    best = YAMNET_SCORER
    for name in (TRAINED_SCORER, YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER):
        if name in ranked and ranked[name] > ranked[best]:
            best = name
    said = ", ".join(f"{name} {recall:.3f}" for name, recall in ranked.items())
    if best == YAMNET_SCORER:
        return best, (f"no candidate ranks gun shots better than YAMNet's own score out of fold (mean best recall "
                      f"at 1-10x the budget: {said})")
    return best, f"{best} ranks gun shots best out of fold (mean best recall at 1-10x the budget: {said})"
