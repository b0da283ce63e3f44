"""The fitted tail of background scores: the score a background's alarms cross a given
number of times an hour, from a line through their upper quantiles (the top 2% of them
down to the top 0.2%) against the log of their rarity, extrapolated to the wanted rarity;
not "above the loudest patch heard", which says nothing when the hours are few. The alarms
above the last point count only by their number, so rare real events among them barely move
it. Scores are counted in a fixed histogram, so hours of them cost a few kilobytes. Used by
the retrain's calibration (training/event_detector.py) and by each site's learned background
(detection/site_background.py).

Both count each alarm once, at its loudest patch (`alarm_peaks`, ~15% of patches): a loud
moment lifts the 2-3 overlapping patches that hold it, and counted per patch one alarm counted
that many times, so the threshold sat ~1 log-odds above what the budget asked
(docs/detection-measured.md).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MARGIN_RANGE = 32.0  # margins are counted in [-32, 32] log-odds; beyond it, in the edge bins
BINS = 1024
BIN_WIDTH = 2 * MARGIN_RANGE / BINS
HELD_OUT_FRACTION = 0.001  # real events up to this share of alarms barely move the fit (they are above its points)
TAIL_FRACTION = 0.02  # the fit's points: the upper quantiles from this share of alarms
LAST_POINT = 2 * HELD_OUT_FRACTION  # ... to this one
MIN_ALARMS_OBSERVED = 3  # hours enough to count this many alarms at the budget: a threshold may be counted
COUNT_CONFIDENCE = 0.84  # a counted threshold holds the budget this surely (one standard deviation)
ALARM_GAP_PATCHES = 2  # patches above a threshold this close together are one alarm


def alarm_peaks(scores: np.ndarray) -> np.ndarray:
    """True where a patch scores highest within ALARM_GAP_PATCHES of it (per column of a 2-d
    (patches, classes) array): the one patch of each alarm that is counted."""
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return np.zeros(scores.shape, bool)
    pad = [(ALARM_GAP_PATCHES, ALARM_GAP_PATCHES)] + [(0, 0)] * (scores.ndim - 1)
    padded = np.pad(scores, pad, constant_values=-np.inf)
    highest = sliding_window_view(padded, 2 * ALARM_GAP_PATCHES + 1, axis=0).max(axis=-1)
    peaks: np.ndarray = scores >= highest
    return peaks


class AlarmPeakHistogram:
    """`counts`: (classes, BINS) of each class's alarm peaks over a stream of patches' margins
    fed in chunks, as if counted over the whole stream at once: the last patches of a chunk
    wait for the next one, which says whether they peak."""

    def __init__(self, classes: int) -> None:
        self.counts = np.zeros((classes, BINS), np.int64)
        self._recent = np.zeros((0, classes))  # the stream's last 2 x ALARM_GAP_PATCHES patches
        self._waiting = 0  # how many of them are not counted yet

    def add(self, margins: np.ndarray, last: bool) -> None:
        window = np.concatenate([self._recent, np.asarray(margins, np.float64).reshape(-1, self.counts.shape[0])])
        start = len(self._recent) - self._waiting
        end = len(window) if last else max(start, len(window) - ALARM_GAP_PATCHES)
        peaks = alarm_peaks(window)[start:end]
        bins = _bin_of(window[start:end])
        for column in range(self.counts.shape[0]):
            self.counts[column] += np.bincount(bins[peaks[:, column], column], minlength=BINS)
        self._recent = window[-2 * ALARM_GAP_PATCHES:]
        self._waiting = len(window) - end


def alarm_peak_histogram(margins: np.ndarray) -> np.ndarray:
    """(classes, BINS) counts of the alarm peaks of (patches, classes) margins, all at once."""
    histogram = AlarmPeakHistogram(np.asarray(margins).shape[1])
    histogram.add(margins, last=True)
    return histogram.counts


def weighted_histogram(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(BINS,) float64: each score counted with its weight."""
    return np.bincount(_bin_of(np.asarray(scores).reshape(-1, 1))[:, 0], weights=weights, minlength=BINS)


def _bin_of(values: np.ndarray) -> np.ndarray:
    return np.clip(((np.asarray(values, np.float64) + MARGIN_RANGE) / BIN_WIDTH).astype(np.int64), 0, BINS - 1)


def tail_threshold(counts: np.ndarray, hours: float, budget_per_hour: float) -> float:
    """The margin one class's background alarms cross `budget_per_hour` times an hour: the line
    through their upper quantiles (2% down to 0.2% of them) against the log of their rarity,
    extrapolated to the budget's rarity. The alarms above the last point count only by their
    number: the rare real events among them barely move the line."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0 or hours <= 0:
        return -math.inf
    rarity = np.log(1 / np.geomspace(TAIL_FRACTION, LAST_POINT, 5))
    levels = np.array([upper_quantile(counts, float(np.exp(-r))) for r in rarity])
    slope = max(BIN_WIDTH / 4, float(np.polyfit(rarity, levels, 1)[0]))
    wanted = math.log(total / max(budget_per_hour * hours, 1e-9))  # the rarity of one alarm in budget * hours
    if wanted <= rarity[0]:
        return upper_quantile(counts, math.exp(-wanted))
    return float(levels[0] + slope * (wanted - rarity[0]))


def counted_threshold(counts: np.ndarray, hours: float, budget_per_hour: float) -> float:
    """The lowest bin edge above which so few alarms were counted that their rate is within
    `budget_per_hour` with COUNT_CONFIDENCE (`allowed_alarms`), the loudest ones (real events
    among them) included."""
    counts = np.asarray(counts, np.float64)
    at_or_above = np.cumsum(counts[::-1])[::-1]  # alarms in this bin or higher
    within = np.flatnonzero(at_or_above <= allowed_alarms(budget_per_hour * hours))
    index = int(within[0]) if len(within) else BINS
    return float(-MARGIN_RANGE + index * BIN_WIDTH)


def allowed_alarms(expected: float) -> int:
    """The most alarms a threshold may have been seen to raise when `expected` are allowed: n
    counted say the rate is below the Poisson upper bound on n with COUNT_CONFIDENCE, so 4
    allowed (4 h at 1 an hour) allow 1 counted, 12 allow 8; counting 4 would place the
    threshold with the spread of 4 counts (measured: 2 false alarms an hour at a budget of 1)."""
    if expected <= 0:
        return 0
    log_term = log_cumulative = -expected  # log P(0 alarms), then log P(<= n alarms) at the allowed rate
    allowed = 0
    while True:  # in logs: months of hours would underflow P(0)
        log_term += math.log(expected / (allowed + 1))
        log_next = float(np.logaddexp(log_cumulative, log_term))
        if log_next > math.log(1 - COUNT_CONFIDENCE):
            return allowed
        log_cumulative = log_next
        allowed += 1


def excess_alarms(expected: float) -> int:
    """The fewest alarms that say a threshold is crossed more often than `expected` allows: so
    many happen by chance at that rate with less than 1 - COUNT_CONFIDENCE (1 allowed in 1 h:
    3; 4 in 4 h: 7). Fewer may be bad luck at a site within the budget."""
    log_cumulative = log_term = -max(expected, 0.0)  # log P(<= n alarms) at the allowed rate, from n = 0
    needed = 1
    while log_cumulative <= math.log(COUNT_CONFIDENCE):
        log_term += math.log(max(expected, 1e-300) / needed)
        log_cumulative = float(np.logaddexp(log_cumulative, log_term))
        needed += 1
    return needed


def alarms_at_or_above(counts: np.ndarray, threshold: float) -> int:
    """How many of the counted alarms are in the bin holding `threshold` or higher."""
    if math.isinf(threshold):
        return 0 if threshold > 0 else int(np.sum(counts))
    return int(np.asarray(counts)[int(_bin_of(np.array([threshold]))[0]):].sum())


def upper_quantile(counts: np.ndarray, fraction: float) -> float:
    """The margin with `fraction` of the counted patches above it (linear within its bin)."""
    above = np.cumsum(counts[::-1])[::-1]  # patches in this bin or higher
    wanted = fraction * counts.sum()
    index = int(np.flatnonzero(above >= wanted)[-1])
    beyond = above[index] - counts[index]  # patches above this bin
    inside = (wanted - beyond) / counts[index] if counts[index] else 0.0
    return float(-MARGIN_RANGE + (index + 1 - inside) * BIN_WIDTH)
