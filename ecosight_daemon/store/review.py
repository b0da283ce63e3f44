"""The cache's review queue: stretches of recordings chosen for a person to label, each
reviewer's one decision per item (changing it replaces it; an undone one is kept, marked),
the outcome the decisions agree on, and the training clip an agreed item became."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


@dataclass(frozen=True)
class NewReviewItem:
    path: str  # absolute: the recording the snippet and the clip are cut from
    recording: str  # as people know it (relative to recordings_dir, or the path given to detect)
    sha256: str
    centre_s: float
    start_s: float
    end_s: float
    clock_utc: str | None
    label: str  # the model's guess (the background class below its threshold)
    score: float
    model_version: str
    reason: str  # top, near_threshold, below_threshold

    @property
    def minute(self) -> int:
        return int(self.centre_s // 60)


@dataclass(frozen=True)
class ReviewItem(NewReviewItem):
    id: int = 0
    round: int = 0
    outcome: str = "pending"  # pending, agreed, uncertain, disagreed
    agreed_label: str | None = None
    clip: str | None = None  # relative to audio_dir, once exported

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    id: int
    item_id: int
    reviewer: str
    verdict: str  # label, uncertain, skip
    label: str | None
    decided_at: float
    undone_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NEW = ("path, recording, sha256, centre_s, start_s, end_s, clock_utc, label, score, model_version, reason")
_ITEM = f"{_NEW}, id, round, outcome, agreed_label, clip"
_DECISION = "id, item_id, reviewer, verdict, label, decided_at, undone_at"


class ReviewLedger:
    def __init__(self, db: sqlite3.Connection, transaction: Transaction) -> None:
        self._db = db
        self._transaction = transaction

    def add(self, items: list[NewReviewItem], per_round: int) -> list[int]:
        """Queue items while fewer than per_round are pending; one per recording, class and
        minute (an item already queued there is not queued again). Their ids."""
        added: list[int] = []
        with self._transaction() as db:
            pending = db.execute("SELECT COUNT(*) FROM review_items WHERE outcome = 'pending'").fetchone()[0]
            latest = db.execute("SELECT COALESCE(MAX(round), 0) FROM review_items").fetchone()[0]
            open_round = db.execute("SELECT COUNT(*) FROM review_items WHERE round = ? AND outcome = 'pending'",
                                    (latest,)).fetchone()[0]
            this_round = latest if open_round else latest + 1
            for item in items:
                if pending + len(added) >= per_round:
                    break
                row = db.execute(
                    f"INSERT OR IGNORE INTO review_items ({_NEW}, minute, round, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (*[getattr(item, name.strip()) for name in _NEW.split(",")], item.minute, this_round,
                     time.time())).fetchone()
                if row is not None:
                    added.append(int(row[0]))
        return added

    def item(self, item_id: int) -> ReviewItem | None:
        row = self._db.execute(f"SELECT {_ITEM} FROM review_items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else ReviewItem(*row)

    def items(self, outcome: str | None = None, limit: int = 500) -> list[ReviewItem]:
        where, parameters = ("WHERE outcome = ?", (outcome,)) if outcome else ("", ())
        rows = self._db.execute(f"SELECT {_ITEM} FROM review_items {where} ORDER BY round, id LIMIT ?",
                                (*parameters, limit))
        return [ReviewItem(*row) for row in rows]

    def next_for(self, reviewer: str) -> ReviewItem | None:
        """The oldest pending item this reviewer has not decided on or skipped."""
        row = self._db.execute(
            f"SELECT {_ITEM} FROM review_items i WHERE outcome = 'pending' AND NOT EXISTS (SELECT 1 FROM "
            "review_decisions d WHERE d.item_id = i.id AND d.reviewer = ? AND d.undone_at IS NULL) "
            "ORDER BY round, id LIMIT 1", (reviewer,)).fetchone()
        return None if row is None else ReviewItem(*row)

    def recently_decided(self, limit: int) -> list[ReviewItem]:
        rows = self._db.execute(
            f"SELECT {_ITEM} FROM review_items WHERE outcome != 'pending' ORDER BY (SELECT MAX(decided_at) FROM "
            "review_decisions d WHERE d.item_id = review_items.id) DESC LIMIT ?", (limit,))
        return [ReviewItem(*row) for row in rows]

    def decisions(self, item_id: int) -> list[Decision]:
        """Every decision on the item, undone ones included, oldest first."""
        return [Decision(*row) for row in self._db.execute(
            f"SELECT {_DECISION} FROM review_decisions WHERE item_id = ? ORDER BY id", (item_id,))]

    def record(self, item_id: int, reviewer: str, verdict: str, label: str | None) -> Decision:
        """The reviewer's one decision on this item, replacing their earlier one in place; the
        same decision again changes nothing (a client repeating itself adds no row)."""
        with self._transaction() as db:
            row = db.execute(f"SELECT {_DECISION} FROM review_decisions WHERE item_id = ? AND reviewer = ?",
                             (item_id, reviewer)).fetchone()
            if row is not None and row[3:5] == (verdict, label) and row[6] is None:
                return Decision(*row)
            row = db.execute(
                "INSERT INTO review_decisions (item_id, reviewer, verdict, label, decided_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (item_id, reviewer) DO UPDATE SET verdict = excluded.verdict, label = excluded.label, "
                f"decided_at = excluded.decided_at, undone_at = NULL RETURNING {_DECISION}",
                (item_id, reviewer, verdict, label, time.time())).fetchone()
        return Decision(*row)

    def undo(self, item_id: int, reviewer: str | None) -> Decision | None:
        """Undoes the latest standing decision on the item (the reviewer's, when one is named)."""
        who, parameters = ("AND reviewer = ?", (item_id, reviewer)) if reviewer else ("", (item_id,))
        with self._transaction() as db:
            row = db.execute(f"SELECT {_DECISION} FROM review_decisions WHERE item_id = ? {who} AND undone_at IS "
                             "NULL ORDER BY id DESC LIMIT 1", parameters).fetchone()
            if row is None:
                return None
            db.execute("UPDATE review_decisions SET undone_at = ? WHERE id = ?", (time.time(), row[0]))
        return Decision(*row)

    def settle(self, item_id: int, outcome: str, agreed_label: str | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE review_items SET outcome = ?, agreed_label = ? WHERE id = ?",
                       (outcome, agreed_label, item_id))

    def set_clip(self, item_id: int, clip: str | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE review_items SET clip = ?, exported_at = ? WHERE id = ?",
                       (clip, None if clip is None else time.time(), item_id))

    def clips_since(self, moment: float) -> int:
        """Review clips in audio_dir written after `moment` (a wall-clock time)."""
        return int(self._db.execute("SELECT COUNT(*) FROM review_items WHERE clip IS NOT NULL AND exported_at > ?",
                                    (moment,)).fetchone()[0])

    def unexported(self) -> list[ReviewItem]:
        """Items whose clip is not what their outcome asks for (to export or to remove)."""
        rows = self._db.execute(
            f"SELECT {_ITEM} FROM review_items WHERE (outcome = 'agreed') != (clip IS NOT NULL) "
            "OR (outcome = 'agreed' AND substr(clip, 1, length(agreed_label) + 1) != agreed_label || '/') ORDER BY id")
        return [ReviewItem(*row) for row in rows]

    def scoreboard(self, background: str) -> dict[str, Any]:
        """How the stored detections (the current version's, once re-scored) treat agreed items:
        confirmed events found again, and rejected alarms (an event guess people called
        background) still raised. Daemon items only: their recording's detections are kept."""
        overlapping = ("EXISTS (SELECT 1 FROM detections d WHERE d.path = i.recording AND d.label = {} "
                       "AND d.start_s <= i.end_s AND d.end_s >= i.start_s)")
        confirmed, found = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM({overlapping.format('i.agreed_label')}), 0) FROM review_items i "
            "WHERE outcome = 'agreed' AND agreed_label != ? AND recording IN (SELECT path FROM recordings)",
            (background,)).fetchone()
        rejected, raised = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM({overlapping.format('i.label')}), 0) FROM review_items i "
            "WHERE outcome = 'agreed' AND agreed_label = ? AND label != ? "
            "AND recording IN (SELECT path FROM recordings)", (background, background)).fetchone()
        versions = sorted(row[0] for row in self._db.execute(
            "SELECT DISTINCT r.model_version FROM recordings r JOIN review_items i ON i.recording = r.path "
            "WHERE r.model_version IS NOT NULL"))
        return {"model_versions": versions, "confirmed_events": int(confirmed), "found": int(found),
                "rejected_alarms": int(rejected), "still_raised": int(raised)}

    def progress(self) -> dict[str, int]:
        """This round's items and how many are decided, and the queue's counts by outcome."""
        latest = self._db.execute("SELECT COALESCE(MAX(round), 0) FROM review_items").fetchone()[0]
        total, decided = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(outcome != 'pending'), 0) FROM review_items WHERE round = ?",
            (latest,)).fetchone()
        counts = {outcome: 0 for outcome in ("pending", "agreed", "uncertain", "disagreed")}
        counts.update(dict(self._db.execute("SELECT outcome, COUNT(*) FROM review_items GROUP BY outcome")))
        exported = self._db.execute("SELECT COUNT(*) FROM review_items WHERE clip IS NOT NULL").fetchone()[0]
        return {"round": int(latest), "round_items": int(total), "round_decided": int(decided),
                "clips": int(exported), **counts}
