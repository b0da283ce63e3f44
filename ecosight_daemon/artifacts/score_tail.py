"""The fitted tail of background scores: the score a background's patches cross a given
number of times an hour, from a line through their upper quantiles (the top 2% of patches
down to the top 0.2%) against the log of their rarity, extrapolated to the wanted rarity;
not "above the loudest patch heard", which says nothing when the hours are few. The patches
above the last point count only by their number, so real events among them (far below 0.1%
of patches) barely move it. Scores are counted in a fixed histogram, so hours of them cost
a few kilobytes. Used by the retrain's calibration (training/event_detector.py) and by
each site's learned background (detection/site_background.py).
"""

from __future__ import annotations

import math

import numpy as np

MARGIN_RANGE = 32.0  # margins are counted in [-32, 32] log-odds; beyond it, in the edge bins
BINS = 1024
BIN_WIDTH = 2 * MARGIN_RANGE / BINS
HELD_OUT_FRACTION = 0.001  # real events up to this share of patches barely move the fit (they are above its points)
TAIL_FRACTION = 0.02  # the fit's points: the upper quantiles from this share of patches
LAST_POINT = 2 * HELD_OUT_FRACTION  # ... to this one
MIN_ALARMS_OBSERVED = 3  # hours enough to count this many alarms at the budget: a threshold may be counted


def margin_histogram(margins: np.ndarray) -> np.ndarray:
    """(classes, BINS) int64 counts of (patches, classes) margins."""
    bins = _bin_of(margins)
    return np.stack([np.bincount(bins[:, c], minlength=BINS) for c in range(bins.shape[1])]).astype(np.int64)


def weighted_histogram(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(BINS,) float64: each score counted with its weight."""
    return np.bincount(_bin_of(np.asarray(scores).reshape(-1, 1))[:, 0], weights=weights, minlength=BINS)


def _bin_of(values: np.ndarray) -> np.ndarray:
    return np.clip(((np.asarray(values, np.float64) + MARGIN_RANGE) / BIN_WIDTH).astype(np.int64), 0, BINS - 1)


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


def counted_threshold(counts: np.ndarray, hours: float, budget_per_hour: float) -> float:
    """The lowest bin edge above which at most `budget_per_hour` patches an hour were counted:
    every patch a possible alarm (an alarm lifts 2-3 patches, so this is cautious), the
    loudest ones (real events among them) included."""
    counts = np.asarray(counts, np.float64)
    at_or_above = np.cumsum(counts[::-1])[::-1]  # patches in this bin or higher
    within = np.flatnonzero(at_or_above <= budget_per_hour * hours)
    index = int(within[0]) if len(within) else BINS
    return float(-MARGIN_RANGE + index * BIN_WIDTH)


def _upper_quantile(counts: np.ndarray, fraction: float) -> float:
    """The margin with `fraction` of the counted patches above it (linear within its bin)."""
    above = np.cumsum(counts[::-1])[::-1]  # patches in this bin or higher
    wanted = fraction * counts.sum()
    index = int(np.flatnonzero(above >= wanted)[-1])
    beyond = above[index] - counts[index]  # patches above this bin
    inside = (wanted - beyond) / counts[index] if counts[index] else 0.0
    return float(-MARGIN_RANGE + (index + 1 - inside) * BIN_WIDTH)
