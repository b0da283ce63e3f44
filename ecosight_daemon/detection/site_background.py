"""What one site's own audio says about its background, learned without anyone listening:
every analysed patch's per-class margins counted in a histogram, and from the site's
pooled histograms a threshold per class that its background crosses at most `budget`
times an hour. A recurring frog or generator that makes one class alarm at a site raises
that class's threshold there; a site quieter than the training background changes nothing
(thresholds are only ever raised).

The threshold comes from a fitted tail, not from "above the loudest patch heard": an
exponential tail fitted to the site's upper quantiles (the top 2% down to the top 0.2%),
extrapolated to the budget's rate. Real events are rare in unlabeled audio (a shot is far
below 0.1% of patches), so the values of the site's highest-scoring patches are held out
of the fit: they neither set the tail's slope nor hide the events they may be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MARGIN_RANGE = 32.0  # margins are counted in [-32, 32] log-odds; beyond it, in the edge bins
BINS = 1024
BIN_WIDTH = 2 * MARGIN_RANGE / BINS
HELD_OUT_FRACTION = 0.001  # real events up to this share of patches barely move the fit (they are above its points)
TAIL_FRACTION = 0.02  # the fit's points: the upper quantiles from this share of patches
LAST_POINT = 2 * HELD_OUT_FRACTION  # ... to this one


def margin_histogram(margins: np.ndarray) -> np.ndarray:
    """(classes, BINS) int64 counts of (patches, classes) margins."""
    bins = np.clip(((np.asarray(margins, np.float64) + MARGIN_RANGE) / BIN_WIDTH).astype(np.int64), 0, BINS - 1)
    return np.stack([np.bincount(bins[:, c], minlength=BINS) for c in range(bins.shape[1])]).astype(np.int64)


def _bin_centres() -> np.ndarray:
    return -MARGIN_RANGE + (np.arange(BINS) + 0.5) * BIN_WIDTH


def tail_threshold(counts: np.ndarray, hours: float, budget_per_hour: float) -> float:
    """The margin one class's background patches cross `budget_per_hour` times an hour: the line
    through its upper quantiles (2% down to 0.2% of patches) against the log of their rarity,
    extrapolated to the budget's rarity. The patches above the last point count only by their
    number: the rare real events among them barely move the line."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0 or hours <= 0:
        return -math.inf
    rarity = np.log(1 / np.geomspace(TAIL_FRACTION, LAST_POINT, 5))
    levels = np.array([_upper_quantile(counts, float(np.exp(-r))) for r in rarity])
    slope = max(BIN_WIDTH / 4, float(np.polyfit(rarity, levels, 1)[0]))
    wanted = math.log(total / max(budget_per_hour * hours, 1e-9))  # the rarity of one patch in budget * hours
    if wanted <= rarity[0]:
        return _upper_quantile(counts, math.exp(-wanted))
    return float(levels[0] + slope * (wanted - rarity[0]))


def _upper_quantile(counts: np.ndarray, fraction: float) -> float:
    """The margin with `fraction` of the counted patches above it (linear within its bin)."""
    above = np.cumsum(counts[::-1])[::-1]  # patches in this bin or higher
    wanted = fraction * counts.sum()
    index = int(np.flatnonzero(above >= wanted)[-1])
    beyond = above[index] - counts[index]  # patches above this bin
    inside = (wanted - beyond) / counts[index] if counts[index] else 0.0
    return float(-MARGIN_RANGE + (index + 1 - inside) * BIN_WIDTH)


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

