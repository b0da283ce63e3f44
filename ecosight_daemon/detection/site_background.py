"""What one site's own audio says about its background, learned without anyone listening:
every analysed patch's per-class margins counted in a histogram, and from the site's
pooled histograms a threshold per class that its background crosses at most `budget`
times an hour. A recurring frog or generator that makes one class alarm at a site raises
that class's threshold there; a site quieter than the training background changes nothing
(thresholds are only ever raised).

The threshold comes from the fitted tail of the site's scores (artifacts/score_tail.py),
not from "above the loudest patch heard". Real events are rare in unlabeled audio (a shot is
far below 0.1% of patches), so the values of the site's highest-scoring patches are held out
of the fit: they neither set the tail's slope nor hide the events they may be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecosight_daemon.artifacts.score_tail import tail_threshold


@dataclass(frozen=True)
class SiteBackground:
    """A site's pooled margin histograms over `seconds` of its analysed audio."""

    histogram: np.ndarray  # (classes, BINS)
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def thresholds(self, budget_per_hour: float) -> np.ndarray:
        return np.array([tail_threshold(row, self.hours, budget_per_hour) for row in self.histogram])

    def offsets(self, base_thresholds: np.ndarray, budget_per_hour: float) -> np.ndarray:
        """How far each class's threshold is raised at this site (>= 0): its site threshold over the base."""
        raised = self.thresholds(budget_per_hour) - np.asarray(base_thresholds, np.float64)
        return np.asarray(np.maximum(0.0, raised), np.float64)

