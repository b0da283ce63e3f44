"""Site learning in the daemon: before a recording is scored, its recorder's other analysed
recordings (under the same version) say how far each class's threshold moves there (raised
where its background alarms too often; the gun-shot threshold also lowered where it is quieter);
after, its own margins join them. A site with less than `min_hours` learned is scored
as any other. A recording is scored again (from the cache) once its site has learned
RELEARN_GROWTH times as much since, or has an hour where it had none: each recording a few
times as its site fills (1 h, 2, 4, 8 h...), never once per new recording. `site_offsets`
is the same for every recorder at once, for a device port."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from ecosight_daemon.detection.recorders import recorder_of
from ecosight_daemon.detection.scoring import Scoring
from ecosight_daemon.detection.site_background import SiteBackground
from ecosight_daemon.store.site_scores import SiteScoreLedger
from ecosight_daemon.util.printable import printable

logger = logging.getLogger(__name__)
RELEARN_GROWTH = 2.0  # a recording is scored again once its site's other audio has grown this many times


class SiteThresholds(NamedTuple):
    offsets: np.ndarray | None  # per class, added to its threshold (+ raised, - lowered); None: the version's
    learned_from_s: float  # seconds of the site's other audio they were learned from (0: none)


class SiteLearning:
    def __init__(self, ledger: SiteScoreLedger, enabled: bool, min_hours: float, budget_per_hour: float) -> None:
        self._ledger = ledger
        self.enabled = enabled
        self._min_hours = min_hours
        self._budget = budget_per_hour
        self._moved: dict[str, dict[str, float]] = {}  # per recorder, the offsets last applied (for status)

    def thresholds(self, relpath: str, scoring: Scoring) -> SiteThresholds:
        """How far each class's threshold moves for this recording, and what that was learned from."""
        base = scoring.base_thresholds()
        if not self.enabled or base is None:
            return SiteThresholds(None, 0.0)
        recorder = recorder_of(relpath)
        histogram, seconds = self._ledger.pooled(recorder, scoring.version, relpath)
        if seconds < self._min_hours * 3600:
            return SiteThresholds(None, 0.0)
        if histogram is None or histogram.shape[0] != len(base):
            return SiteThresholds(None, seconds)  # counted as learned, or it would be scored again and again
        offsets = SiteBackground(histogram, seconds).offsets(base, self._budget, scoring.calibrated_class())
        moved = {label: round(float(offset), 2) for label, offset in zip(scoring.classes, offsets, strict=True)
                 if offset != 0}
        if moved != self._moved.get(recorder):
            logger.info("site %s: thresholds moved by %s (log-odds; learned from %.1f h of its audio)",
                        printable(recorder), moved or "nothing", seconds / 3600)
        self._moved[recorder] = moved
        return SiteThresholds(offsets, seconds)

    def learned(self, relpath: str, sha256: str, version: str, seconds: float, histogram: np.ndarray | None,
                learned_from_s: float) -> None:
        """A scored recording's margins join its site's (only a scorer that counts them has them)."""
        if histogram is not None:
            self._ledger.record(relpath, sha256, recorder_of(relpath), version, seconds, histogram, learned_from_s)

    def to_score_again(self, version: str) -> list[str]:
        """Recordings scored under `version` whose site has learned enough more since (or, with
        site learning off, whose thresholds a site moved)."""
        if not self.enabled:
            return self._ledger.learned_from_a_site(version)
        return self._ledger.learned_more_since(version, self._min_hours * 3600, RELEARN_GROWTH)

    def status(self, version: str | None) -> dict[str, Any]:
        hours = self._ledger.hours_by_recorder(version) if version is not None else {}
        return {"enabled": self.enabled, "min_hours": self._min_hours,
                "sites": [{"recorder": recorder, "hours_learned": round(h, 3), "applies": h >= self._min_hours,
                           "threshold_offsets": self._moved.get(recorder, {})} for recorder, h in hours.items()]}


def site_offsets(ledger: SiteScoreLedger, version: str, classes: list[str], base_thresholds: np.ndarray,
                 min_hours: float, budget_per_hour: float, calibrated: int | None) -> list[dict[str, Any]]:
    """Per recorder, what every analysed recording of it says under `version`: the hours learned
    and, once they reach `min_hours`, each class's offset (subtracted from its margin before
    the label rule, as the daemon scores that recorder's next recording)."""
    sites = []
    for recorder, hours in ledger.hours_by_recorder(version).items():
        histogram, seconds = ledger.pooled(recorder, version, excluding="")
        applies = histogram is not None and histogram.shape[0] == len(classes) and hours >= min_hours
        offsets = SiteBackground(histogram, seconds).offsets(base_thresholds, budget_per_hour, calibrated) \
            if applies and histogram is not None else np.zeros(len(classes))
        sites.append({"recorder": recorder, "hours_learned": round(hours, 3), "applies": bool(applies),
                      "margin_offsets": {c: round(float(o), 4) for c, o in zip(classes, offsets, strict=True)}})
    return sites
