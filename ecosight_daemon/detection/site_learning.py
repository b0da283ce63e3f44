"""Site learning in the daemon: before a recording is scored, its recorder's other analysed
recordings (under the same version) say how far each class's threshold moves there (raised
where its background alarms too often; the gun-shot threshold also lowered where it is quieter);
after, its own margins join them. A site with less than `min_hours` learned is scored
as any other. `site_offsets` is the same for every recorder at once, for a device port."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ecosight_daemon.detection.recorders import recorder_of
from ecosight_daemon.detection.scoring import Scoring
from ecosight_daemon.detection.site_background import SiteBackground
from ecosight_daemon.store.site_scores import SiteScoreLedger
from ecosight_daemon.util.printable import printable

logger = logging.getLogger(__name__)


class SiteLearning:
    def __init__(self, ledger: SiteScoreLedger, enabled: bool, min_hours: float, budget_per_hour: float) -> None:
        self._ledger = ledger
        self.enabled = enabled
        self._min_hours = min_hours
        self._budget = budget_per_hour
        self._moved: dict[str, dict[str, float]] = {}  # per recorder, the offsets last applied (for status)

    def offsets(self, relpath: str, scoring: Scoring) -> np.ndarray | None:
        """How far each class's threshold moves for this recording (+ raised, - lowered); None: not at all."""
        base = scoring.base_thresholds()
        if not self.enabled or base is None:
            return None
        recorder = recorder_of(relpath)
        histogram, seconds = self._ledger.pooled(recorder, scoring.version, relpath)
        if histogram is None or histogram.shape[0] != len(base) or seconds < self._min_hours * 3600:
            return None
        offsets = SiteBackground(histogram, seconds).offsets(base, self._budget, scoring.calibrated_class())
        moved = {label: round(float(offset), 2) for label, offset in zip(scoring.classes, offsets, strict=True)
                 if offset != 0}
        if moved != self._moved.get(recorder):
            logger.info("site %s: thresholds moved by %s (log-odds; learned from %.1f h of its audio)",
                        printable(recorder), moved or "nothing", seconds / 3600)
        self._moved[recorder] = moved
        return offsets

    def learned(self, relpath: str, sha256: str, version: str, seconds: float, histogram: np.ndarray | None) -> None:
        """A scored recording's margins join its site's (only a scorer that counts them has them)."""
        if histogram is not None:
            self._ledger.record(relpath, sha256, recorder_of(relpath), version, seconds, histogram)

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
