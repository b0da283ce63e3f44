"""The review queue as the daemon, the CLI and the HTTP API use it: filled from scored
runs, decided on, undone, and kept in step with the training clips in audio_dir.

A decision is committed to the cache before its clip is written; the clips then follow
the decisions (`sync_clips`), so a process killed between the two finishes the export on
its next start and never leaves half a clip under a name the watcher would take.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecosight_daemon.artifacts.split_rule import Split, compile_group_patterns, group_key, split_by_hash
from ecosight_daemon.config import Settings
from ecosight_daemon.detection.clock import iso_utc_at
from ecosight_daemon.detection.events import Event
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.ingest.naming import label_problem
from ecosight_daemon.review.clips import CLIP_MARK, recording_stem, remove_clip, remove_stale_temporaries, write_clip
from ecosight_daemon.review.outcome import outcome_of
from ecosight_daemon.review.selection import select
from ecosight_daemon.store.review import NewReviewItem, ReviewItem, ReviewLedger

logger = logging.getLogger(__name__)
VERDICTS = ("label", "uncertain", "skip")
MAX_REVIEWER_CHARS = 64
MAX_CLASS_FOLDERS = 1000
RECENT_SHOWN = 20  # decided items in the status document (the page can undo and replay them)
STANDING_SHOWN = 20  # reviewers' standing decisions shown per item (the votes count them all)


class UnknownItem(EcosightError):
    http_status = 404


class BadDecision(EcosightError):
    http_status = 422


@dataclass(frozen=True)
class ScoredRun:
    path: Path  # absolute
    recording: str
    sha256: str
    start_utc: str | None
    events: list[Event]
    trace: WindowTrace
    model_version: str


class ReviewQueue:
    def __init__(self, settings: Settings, ledger: ReviewLedger, classes: Callable[[], list[str]]) -> None:
        self._ledger = ledger
        self._audio_dir = settings.paths.audio_dir
        self._background = settings.detection.background_class
        self._per_round = settings.review.per_round
        self._clip_s = settings.review.clip_s
        self._patterns = compile_group_patterns(settings.training.group_patterns)
        self._split = (settings.training.split[0], settings.training.split[1], settings.training.split[2])
        self._classes = classes
        self._scoreboards: dict[str, dict[str, Any]] = {}  # by model version: what each did on reviewed items

    def reserved_for_evaluation(self, recording: str) -> bool:
        """Recordings whose clips would fall in the test split are never queued: they stay
        unseen, for judging the detector."""
        group = group_key(f"{recording_stem(recording)}{CLIP_MARK}0ms.wav", self._patterns)
        return split_by_hash(group, self._split) is Split.TEST

    def fill(self, run: ScoredRun, budget: int | None = None) -> list[int]:
        """Items chosen from one scored run; their ids (none from a reserved recording)."""
        if self.reserved_for_evaluation(run.recording):
            logger.info("review: %s is reserved for evaluation; nothing queued from it", run.recording)
            return []
        wanted = self._per_round if budget is None else min(budget, self._per_round)
        chosen = select(run.events, run.trace, wanted, seed=int(run.sha256[:8], 16))
        items = [NewReviewItem(
            str(run.path), run.recording, run.sha256, c.centre_s, c.start_s, c.end_s,
            iso_utc_at(run.start_utc, c.centre_s),
            c.label, c.score, run.model_version, c.reason) for c in chosen]
        added = self._ledger.add(items, self._per_round)
        if added:
            logger.info("review: %d items queued from %s", len(added), run.recording)
        return added

    def decide(self, item_id: int, reviewer: str, verdict: str, label: str | None = None) -> dict[str, Any]:
        item = self._item(item_id)
        reviewer = _checked_reviewer(reviewer)
        if verdict not in VERDICTS:
            raise BadDecision(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        if verdict == "label":
            label = self._checked_label(label)
        decision = self._ledger.record(item.id, reviewer, verdict, label if verdict == "label" else None)
        logger.info("review: item %d %s by %s", item.id, f"is {label}" if verdict == "label" else verdict, reviewer)
        return {"decision": decision.as_dict(), **self._settle(item.id)}

    def undo(self, item_id: int, reviewer: str | None = None) -> dict[str, Any]:
        item = self._item(item_id)
        undone = self._ledger.undo(item.id, _checked_reviewer(reviewer) if reviewer else None)
        if undone is None:
            raise BadDecision(f"item {item_id} has no standing decision{f' by {reviewer}' if reviewer else ''} "
                              "to undo")
        logger.info("review: item %d: %s's decision undone", item.id, undone.reviewer)
        return {"undone": undone.as_dict(), **self._settle(item.id)}

    def next_for(self, reviewer: str) -> dict[str, Any] | None:
        """The next item this reviewer has not decided on (None: the queue is done for them)."""
        item = self._ledger.next_for(reviewer)
        return None if item is None else self.shown(item)

    def sync_clips(self) -> int:
        """Every agreed item has its clip, and no other item has one; the clips written or removed."""
        changed = 0
        for item in self._ledger.unexported():
            try:
                if item.clip is not None:
                    remove_clip(item.clip, self._audio_dir)
                    self._ledger.set_clip(item.id, None)
                    logger.info("review: clip %s removed (item %d is no longer agreed)", item.clip, item.id)
                if item.outcome == "agreed" and item.agreed_label is not None:
                    clip = write_clip(item, item.agreed_label, self._audio_dir, self._clip_s)
                    self._ledger.set_clip(item.id, clip)
                    logger.info("review: clip %s written from %s at %.2f s", clip, item.recording, item.centre_s)
                changed += 1
            except (OSError, RuntimeError) as exc:  # the recording is gone, the disk is full: retried later
                logger.warning("review: the clip of item %d cannot be written now: %s; retried at the next "
                               "decision or start", item.id, exc)
        return changed

    def recover(self) -> None:
        """At start: clips a killed export left half-written go; the exports it owed are made."""
        removed = remove_stale_temporaries(self._audio_dir)
        if removed:
            logger.info("review: %d unfinished clips from an interrupted export removed", removed)
        self.sync_clips()

    def clips_since(self, moment: float) -> int:
        return self._ledger.clips_since(moment)

    def progress(self) -> dict[str, int]:
        return self._ledger.progress()

    def status(self) -> dict[str, Any]:
        """For the status document: progress, the pending items, the disagreements, the latest decided."""
        return {
            "progress": self._ledger.progress(),
            "pending": [self.shown(i, with_decisions=True) for i in self._ledger.items("pending", self._per_round)],
            "disagreed": [self.shown(i, with_decisions=True) for i in self._ledger.items("disagreed", 50)],
            "recent": [self.shown(i, with_decisions=True) for i in self._ledger.recently_decided(RECENT_SHOWN)],
            "classes": self._classes(),
            "background_class": self._background,
            **self._scoreboard(),
        }

    def _scoreboard(self) -> dict[str, Any]:
        """The scoreboard on reviewed items now, and the last one of another version (since this
        process started): what the latest promotion or rollback changed."""
        board = self._ledger.scoreboard(self._background)
        if len(board["model_versions"]) == 1:  # every reviewed recording scored by one version
            self._scoreboards.pop(board["model_versions"][0], None)
            self._scoreboards[board["model_versions"][0]] = board  # the latest version last
        history = list(self._scoreboards.values())
        return {"scoreboard": board, "scoreboard_before": history[-2] if len(history) > 1 else None}

    def _settle(self, item_id: int) -> dict[str, Any]:
        outcome, agreed = outcome_of(self._ledger.decisions(item_id))
        self._ledger.settle(item_id, outcome, agreed)
        self.sync_clips()
        item = self._item(item_id)
        return {"item": self.shown(item, with_decisions=True)}

    def _item(self, item_id: int) -> ReviewItem:
        item = self._ledger.item(item_id)
        if item is None:
            raise UnknownItem(f"no review item {item_id}; `ecosight-daemon review list` shows the queue")
        return item

    def _checked_label(self, label: str | None) -> str:
        known = sorted(set(self._classes()) | {self._background})
        if not label or label_problem(label) is not None or label not in known:
            raise BadDecision(f"label must be one of the classes: {', '.join(known)} (the background class "
                              f"{self._background!r} says it is not an event); got {label!r}")
        return label

    def shown(self, item: ReviewItem, with_decisions: bool = False) -> dict[str, Any]:
        """The item; with_decisions: its standing decisions (one per reviewer, skips included,
        at most STANDING_SHOWN) and their counts, never a history of changes."""
        shown = item.as_dict()
        if with_decisions:
            standing = [d for d in self._ledger.decisions(item.id) if d.undone_at is None]
            votes: dict[str, int] = {}
            for decision in standing:
                key = decision.label if decision.verdict == "label" and decision.label else decision.verdict
                votes[key] = votes.get(key, 0) + 1
            shown["votes"] = votes
            shown["standing"] = [{"reviewer": d.reviewer, "verdict": d.verdict, "label": d.label,
                                  "decided_at": d.decided_at} for d in standing[-STANDING_SHOWN:]]
        return shown


def class_folders(audio_dir: Path) -> list[str]:
    """The classes a decision may name: audio_dir's class folders (a folder name is a label)."""
    if not audio_dir.is_dir():
        return []
    entries = itertools.islice(os.scandir(audio_dir), MAX_CLASS_FOLDERS)  # a stray huge folder costs no more
    return sorted(e.name for e in entries
                  if e.is_dir() and not e.name.startswith(".") and label_problem(e.name) is None)


def _checked_reviewer(reviewer: str | None) -> str:
    if not reviewer or len(reviewer) > MAX_REVIEWER_CHARS or not reviewer.isprintable():
        raise BadDecision(f"reviewer must be a name of 1 to {MAX_REVIEWER_CHARS} printable characters")
    return reviewer

