"""Where a scorer's threshold lands for a false-alarm budget, judged on the out-of-fold parts of
a retrain's soundscape (training/event_detector.py builds them): what counts as a false alarm
(an alarm away from every event of the class, one on a mixed-in confuser at its weight), the
calibrated threshold (counted where the parts hold enough hours, else the fitted tail of their
alarm peaks: artifacts/score_tail.py), what the parts show there, and how well a scorer ranks
the class's events near the budget. The priority class's threshold comes from here, and so do
the other event classes': each is held to the same budget (`other_class_thresholds`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.score_tail import (
    ALARM_GAP_PATCHES,
    BINS,
    MIN_ALARMS_OBSERVED,
    alarm_peaks,
    tail_threshold,
    weighted_histogram,
)
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS, PATCH_SECONDS
from ecosight_daemon.training.event_mixing import PlacedEvent

COLLAR_S = 0.5
RANKING_BUDGETS = (1.0, 2.0, 5.0, 10.0)  # multiples of the budget at which the scorers' ranking is compared


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


def other_class_thresholds(parts: list[PartScores], margins: list[np.ndarray], classes: list[str], background: str,
                           priority: str, budget_per_hour: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Per class, the threshold on its out-of-fold margins (`margins`: one (patches, classes)
    array per part) at which it raises at most the budget's false alarms an hour, as the
    priority class's is calibrated, never below 0 (beating every other class, the rule
    before); 0 for the priority class, the background and a class the parts hold no event of.
    And, per calibrated class, what its out-of-fold parts show at 0 and at that threshold."""
    thresholds = np.zeros(len(classes), np.float32)
    figures: dict[str, Any] = {}
    for c, label in enumerate(classes):
        if label in (background, priority) or not any(e.label == label for p in parts for e in p.events):
            continue
        scored = [PartScores(p.events, p.hours, m[:, c], p.confuser_weight)
                  for p, m in zip(parts, margins, strict=True)]
        threshold, how = calibrated_threshold(scored, budget_per_hour, label, background)
        thresholds[c] = max(0.0, threshold)
        figures[label] = {"threshold": round(float(thresholds[c]), 4), "calibration": how,
                          "at_0": _shown(scored, 0.0, label),
                          "at_threshold": _shown(scored, float(thresholds[c]), label)}
    return thresholds, figures


def _shown(parts: list[PartScores], threshold: float, label: str) -> dict[str, Any]:
    """False alarms an hour (raw) and recall of `label`'s events on the parts at `threshold`."""
    counted = [false_alarms_and_hits(p, threshold, label) for p in parts]
    events = sum(1 for p in parts for e in p.events if e.label == label)
    return {"false_alarms_per_hour": round(sum(fa for fa, _ in counted) / sum(p.hours for p in parts), 3),
            "recall": round(sum(hits for _, hits in counted) / events, 4), "events": events}
