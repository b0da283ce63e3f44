"""Each analysed recording's margin histograms (what its alarm peaks scored, per class, under
one version), kept by recorder: the site's own background, pooled when its next recording is
scored. With each, how much of the site's other audio its own thresholds were learned from,
so it is scored again as the site learns more. Rebuildable: any re-score writes them again."""

from __future__ import annotations

import sqlite3
import time

import numpy as np

from ecosight_daemon.store.recordings import Transaction

COUNTED = "alarm peaks"  # what a row's histogram counts; rows of other counts are not pooled


class SiteScoreLedger:
    def __init__(self, db: sqlite3.Connection, transaction: Transaction) -> None:
        self._db = db
        self._transaction = transaction

    def record(self, path: str, sha256: str, recorder: str, version: str, seconds: float,
               histogram: np.ndarray, learned_from_s: float = 0.0) -> None:
        """`learned_from_s`: seconds of the site's other audio its thresholds came from (0: none)."""
        counts = np.ascontiguousarray(histogram, dtype=np.int64)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO site_scores (path, sha256, recorder, model_version, seconds, classes, histogram, "
                "counted, learned_from_s, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) "
                "DO UPDATE SET sha256 = excluded.sha256, recorder = excluded.recorder, "
                "model_version = excluded.model_version, seconds = excluded.seconds, classes = excluded.classes, "
                "histogram = excluded.histogram, counted = excluded.counted, "
                "learned_from_s = excluded.learned_from_s, updated_at = excluded.updated_at",
                (path, sha256, recorder, version, seconds, counts.shape[0], counts.tobytes(), COUNTED,
                 learned_from_s, time.time()))

    def pooled(self, recorder: str, version: str, excluding: str) -> tuple[np.ndarray | None, float]:
        """The summed histograms and seconds of the recorder's other analysed recordings under
        `version` (rows of a file since replaced are skipped); (None, 0) if there are none."""
        total: np.ndarray | None = None
        seconds = 0.0
        for classes, blob, row_seconds in self._db.execute(
                "SELECT s.classes, s.histogram, s.seconds FROM site_scores s JOIN recordings r ON r.path = s.path "
                "AND r.sha256 = s.sha256 AND r.state = 'done' WHERE s.recorder = ? AND s.model_version = ? "
                "AND s.path != ? AND s.counted = ?", (recorder, version, excluding, COUNTED)):
            counts = np.frombuffer(blob, dtype=np.int64).reshape(classes, -1)
            if total is not None and total.shape != counts.shape:
                continue  # written by a build with other bins: ignored until re-scored
            total = counts.copy() if total is None else total + counts
            seconds += row_seconds
        return total, seconds

    def hours_by_recorder(self, version: str) -> dict[str, float]:
        """Hours of each recorder's audio learned from under `version`."""
        return {recorder: seconds / 3600 for recorder, seconds in self._db.execute(
            "SELECT s.recorder, SUM(s.seconds) FROM site_scores s JOIN recordings r ON r.path = s.path "
            "AND r.sha256 = s.sha256 AND r.state = 'done' WHERE s.model_version = ? AND s.counted = ? "
            "GROUP BY s.recorder ORDER BY s.recorder", (version, COUNTED))}


    def learned_more_since(self, version: str, min_seconds: float, growth: float) -> list[str]:
        """Recordings scored under `version` whose site now has more to say: its other audio
        reached `min_seconds` where none was learned from, or grew `growth` times what was."""
        return [row[0] for row in self._db.execute(
            "WITH learned AS (SELECT s.path, s.recorder, s.seconds, s.learned_from_s, "
            "r.model_version = s.model_version AS scored_so FROM site_scores s JOIN recordings r "
            "ON r.path = s.path AND r.sha256 = s.sha256 AND r.state = 'done' "
            "WHERE s.model_version = ? AND s.counted = ?), "
            "site AS (SELECT recorder, SUM(seconds) AS seconds FROM learned GROUP BY recorder) "
            "SELECT l.path FROM learned l JOIN site ON site.recorder = l.recorder "
            "WHERE l.scored_so AND site.seconds - l.seconds >= MAX(?, ? * l.learned_from_s) ORDER BY l.path",
            (version, COUNTED, min_seconds, growth))]

    def learned_from_a_site(self, version: str) -> list[str]:
        """Recordings scored under `version` with thresholds a site moved (to score again once
        site learning is turned off)."""
        return [row[0] for row in self._db.execute(
            "SELECT s.path FROM site_scores s JOIN recordings r ON r.path = s.path AND r.sha256 = s.sha256 "
            "AND r.state = 'done' AND r.model_version = s.model_version WHERE s.model_version = ? "
            "AND s.learned_from_s > 0 ORDER BY s.path", (version,))]
