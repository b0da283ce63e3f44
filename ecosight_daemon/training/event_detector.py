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
where it ranks them better there than every YAMNet-based candidate, by more than the
comparison's noise (artifacts/event_detector.py says how each runs).

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
from ecosight_daemon.artifacts.shot_spectrogram import ShotSpectrogramModel, spectrogram_inputs
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS, SAMPLE_RATE
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.context_trees_fit import fit_context_trees
from ecosight_daemon.training.event_mixing import PlacedEvent, Soundscape, build_soundscape
from ecosight_daemon.training.event_variation import from_afar
from ecosight_daemon.training.logistic_head import fit_logistic
from ecosight_daemon.training.operating_point import (
    PartScores,
    confuser_weight,
    operating_point,
    other_class_thresholds,
)

PARTS = 3
SECONDS_PER_EVENT = 8.0  # of soundscape per event mixed in (events are >= 6 s apart)
PRIORITY_COPIES = 1  # each priority-class clip is mixed in this many times per soundscape
MIN_PART_SECONDS = 60.0
REGULARIZATION_C = 0.001  # strong: a few thousand patches, 525 features, sites it never heard (docs/detection.md)
CONFUSERS_PER_HOUR = 25.0  # loud non-shot impulses a field hour holds (the field recordings: 25)
CNN_SHOT_COPIES = 4  # benchmarks/detection_cnn.py: more copies of the few shots, more for the CNN to learn
CNN_CONFUSER_COPIES = 2
CNN_SOUNDSCAPES = 1  # per part: with 2 the CNN lost the out-of-fold choice to YAMNet (docs/detection-measured.md)
# Of the copies of each event heard from afar (training/event_variation.py). 0.5 ranked a little better in
# `detection_cnn vary` (15 folds) but worse end to end in `detection` (seeds 42 and 1): not shipped
# (docs/detection-measured.md).
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
    out_of_fold_margins = []
    for k in range(PARTS):
        progress(f"event detector: out-of-fold scores {k + 1} of {PARTS}")
        twin = EventDetector(fit_on([i for i in range(PARTS) if i != k]), classes, background, priority, 0.0, {})
        margins = twin.margins(parts[k][1])
        out_of_fold_margins.append(margins)
        out_of_fold.append(PartScores(parts[k][0].events, parts[k][0].hours,
                                      margins[:, classes.index(priority)] if priority_in else margins.max(axis=1),
                                      weights[k]))
    class_thresholds, by_class = other_class_thresholds(out_of_fold, out_of_fold_margins, classes, background,
                                                        priority, budget_per_hour)
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
               "out_of_fold_by_scorer": points, "other_classes": by_class}
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
                         figures, scorer, shipped_cnn, shipped_trees, class_thresholds)


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


def choose_priority_scorer(points: dict[str, dict[str, Any]], priority: str) -> tuple[str, str]:
    """YAMNet's own gun-shot score unless a candidate ranks shots better out of fold on the same
    soundscapes (ranking_recall): YAMNet + CNN where it beats YAMNet, YAMNet + CNN + context trees
    where it beats both; a trained detector must beat the network it is built on. The fitted
    scorer, which does not start from YAMNet's score and so has nothing to hold it on background
    the parts never held, must beat the best of those by more than the comparison's noise."""
    ranked: dict[str, float] = {name: point["out_of_fold_ranking_recall"] for name, point in points.items()
                                if point.get("out_of_fold_ranking_recall") is not None}
    if YAMNET_SCORER not in ranked:
        return TRAINED_SCORER, f"no {priority!r} events to compare the scorers on"
    best = YAMNET_SCORER
    for name in (YAMNET_PLUS_CNN_SCORER, YAMNET_PLUS_CNN_PLUS_TREES_SCORER):
        if name in ranked and ranked[name] > ranked[best]:
            best = name
    said = ", ".join(f"{name} {recall:.3f}" for name, recall in ranked.items())
    events = int(points[best].get("out_of_fold_events") or 0)
    margin = ranking_noise(ranked[best], events)
    noise = f"the comparison's noise ({margin:.3f}, one standard error of a recall on {events} events)"
    if TRAINED_SCORER in ranked and ranked[TRAINED_SCORER] > ranked[best] + margin:
        said += f"; the fitted scorer leads {best} by more than {noise}"
        best = TRAINED_SCORER
    elif TRAINED_SCORER in ranked and ranked[TRAINED_SCORER] > ranked[best]:
        said += f"; the fitted scorer leads {best} by less than {noise}"
    if best == YAMNET_SCORER:
        return best, (f"no candidate ranks gun shots better than YAMNet's own score out of fold (mean best recall "
                      f"at 1-10x the budget: {said})")
    return best, f"{best} ranks gun shots best out of fold (mean best recall at 1-10x the budget: {said})"


def ranking_noise(recall: float, events: int) -> float:
    """How far two scorers' out-of-fold ranking recalls on the same `events` can differ by
    chance: one standard error of a recall there, and never less than one event."""
    if events <= 0:
        return 0.0
    return max(1.0 / events, float(np.sqrt(recall * (1.0 - recall) / events)))
