"""What one site's own audio says about its background, learned without anyone listening:
each class's alarm peaks (one patch per alarm, artifacts/score_tail.py) counted in a
histogram of their margins, and from the site's
pooled histograms a threshold per class that its background crosses at most `budget`
times an hour. A recurring frog or generator that makes one class alarm at a site raises
that class's threshold there.

The raise comes from the fitted tail of the site's scores (artifacts/score_tail.py), not
from "above the loudest patch heard". Real events are rare in unlabeled audio (a shot is
far below 0.1% of patches), so the values of the site's highest-scoring patches are held out
of the fit: they neither set the tail's slope nor hide the events they may be.

The one class whose threshold was calibrated for the budget (gun shot: the retrain's
out-of-fold hours of other sites' background, too few to count an alarm an hour) is also
lowered at a site quieter than that, once the site has hours enough to count its alarms
at the budget (MIN_ALARMS_OBSERVED): to where so few of its own alarms were counted that
their rate is within `budget` with COUNT_CONFIDENCE (score_tail.allowed_alarms), the loudest
included (real shots among them can only keep the threshold higher), and never below its
fitted tail. That count never raises it: only the fitted tail, which holds loud rarities out,
raises a threshold.

A threshold is raised only where the site's own alarms at it recur: more of them counted in
its hours than chance at the budget would give (score_tail.excess_alarms: 3 in 1 h, 7 in
4 h). A site whose tail merely extrapolates above the threshold, with no more alarms than
the budget allows, keeps it: raising there costs its shots and removes no false alarm
(measured on the detection benchmark, docs/detection-measured.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecosight_daemon.artifacts.score_tail import (
    MIN_ALARMS_OBSERVED,
    alarms_at_or_above,
    counted_threshold,
    excess_alarms,
    tail_threshold,
)


@dataclass(frozen=True)
class SiteBackground:
    """A site's pooled alarm-peak margin histograms over `seconds` of its analysed audio."""

    histogram: np.ndarray  # (classes, BINS)
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def thresholds(self, budget_per_hour: float) -> np.ndarray:
        return np.array([tail_threshold(row, self.hours, budget_per_hour) for row in self.histogram])

    def counts_alarms(self, budget_per_hour: float) -> bool:
        """Hours enough to count MIN_ALARMS_OBSERVED alarms at the budget."""
        return self.hours * budget_per_hour >= MIN_ALARMS_OBSERVED

    def recurring(self, base_thresholds: np.ndarray, budget_per_hour: float) -> np.ndarray:
        """Per class: its alarms at the base threshold are more than chance within the budget."""
        needed = excess_alarms(budget_per_hour * self.hours)
        return np.array([alarms_at_or_above(row, float(threshold)) >= needed
                         for row, threshold in zip(self.histogram, base_thresholds, strict=True)])

    def offsets(self, base_thresholds: np.ndarray, budget_per_hour: float,
                calibrated: int | None = None) -> np.ndarray:
        """How far each class's threshold moves at this site: raised (>= 0) to its fitted tail
        where its alarms at the base recur; the `calibrated` class's (the priority class) also
        lowered, once the site counts alarms, to its counted threshold, never below its fitted
        tail. The counted threshold only lowers: above the base it would sit above the site's
        loudest alarms, which may be the real shots the site heard (at 3 h, none may be counted)."""
        base = np.asarray(base_thresholds, np.float64)
        tails = self.thresholds(budget_per_hour)
        recurring = self.recurring(base, budget_per_hour)
        offsets = np.where(recurring, np.maximum(0.0, tails - base), 0.0)
        if calibrated is not None and self.counts_alarms(budget_per_hour):
            counted = counted_threshold(self.histogram[calibrated], self.hours, budget_per_hour)
            moved = max(tails[calibrated], min(counted, base[calibrated])) - base[calibrated]
            offsets[calibrated] = moved if recurring[calibrated] else min(moved, 0.0)
        return np.asarray(offsets, np.float64)

