"""When to retrain: new samples past the threshold, requests (schedule, SIGHUP, CLI), drift.

Pure: no store, no model, no clock of its own. The loop tells it what changed and what
time it is, and asks it for decisions, so every rule is tested with plain values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ecosight_daemon.config import TriggerSettings

logger = logging.getLogger(__name__)

# While a burst is being embedded, the new-sample count (a query over the whole index) is
# refreshed at most this often; it is always refreshed when the burst ends.
TRIGGER_CHECK_S = 5.0
DRIFT_CHECK_INTERVAL_S = 60.0


HTTP_REASON_PREFIX = "HTTP: "  # how a reason sent over HTTP is recorded
MAX_QUEUED_REASONS = 10  # reasons kept word for word; further requests are counted, not stored


@dataclass
class RetrainRequests:
    """Reasons to retrain that arrived since the last run started; many merge into one run.

    Bounded, whatever clients send: at most one HTTP reason waits (the others merge into
    it, counted) and at most MAX_QUEUED_REASONS in all, so the status document and the
    log entry stay small however many requests come.
    """

    reasons: list[str] = field(default_factory=list)
    merged: int = 0  # requests counted into the waiting ones instead of stored

    def add(self, reason: str) -> None:
        if reason in self.reasons:
            return
        http_waiting = reason.startswith(HTTP_REASON_PREFIX) and any(
            r.startswith(HTTP_REASON_PREFIX) for r in self.reasons)
        if http_waiting or len(self.reasons) >= MAX_QUEUED_REASONS:
            self.merged += 1
            return
        self.reasons.append(reason)

    def pending(self) -> bool:
        return bool(self.reasons)

    def take(self) -> str:
        merged = "; ".join(self.reasons) + (f" (and {self.merged} more requests)" if self.merged else "")
        self.reasons.clear()
        self.merged = 0
        return merged


@dataclass
class TriggerPolicy:
    settings: TriggerSettings
    baseline: set[str] = field(default_factory=set)  # what the last run learned from
    new_samples: int = 0
    requests: RetrainRequests = field(default_factory=RetrainRequests)
    _corpus_changed: bool = True
    _next_count_at: float = 0.0
    _drift_checked_at: float = -DRIFT_CHECK_INTERVAL_S
    _drift_checked_count: int = 0

    def corpus_changed(self) -> None:
        self._corpus_changed = True

    def count_due(self, now: float, embedding_burst: bool) -> bool:
        """Whether the new samples should be counted now (the caller then calls `count`)."""
        if not self._corpus_changed or (embedding_burst and now < self._next_count_at):
            return False
        self._corpus_changed = False
        self._next_count_at = now + TRIGGER_CHECK_S
        return True

    def count(self, now: float, training_hashes: set[str], retrain_running: bool) -> set[str] | None:
        """Count new samples and ask for a retrain past the threshold.

        Returns the new samples when a drift check is due on them, else None.
        """
        new = training_hashes - self.baseline
        self.new_samples = len(new)
        threshold = self.settings.min_new_samples
        if self.new_samples >= threshold and not self.requests.pending() and not retrain_running:
            self.request(f"threshold: {self.new_samples} new samples >= {threshold}", retrain_running)
        if (self.settings.drift_min_accuracy <= 0 or len(new) < self.settings.drift_min_samples or retrain_running
                or len(new) == self._drift_checked_count or now - self._drift_checked_at < DRIFT_CHECK_INTERVAL_S):
            return None
        self._drift_checked_at, self._drift_checked_count = now, len(new)
        return new

    def drift_measured(self, accuracy: float | None, samples: int) -> None:
        floor = self.settings.drift_min_accuracy
        if accuracy is not None and accuracy < floor:
            self.request(f"drift: accuracy {accuracy:.3f} < {floor:.3f} on {samples} new samples", False)

    def request(self, reason: str, retrain_running: bool) -> None:
        if retrain_running:
            logger.info("retrain requested (%s) while one runs; it will run once afterwards", reason)
        else:
            logger.info("retrain requested: %s", reason)
        self.requests.add(reason)

    def start_due(self, retrain_running: bool) -> bool:
        return self.requests.pending() and not retrain_running

    def take(self, training_hashes: set[str]) -> str:
        """Start a run on what is there now: the merged reasons; new samples count from here."""
        self.baseline = training_hashes
        self.new_samples = 0
        return self.requests.take()

    def status_fields(self) -> dict[str, object]:
        return {
            "new_samples": self.new_samples,
            "min_new_samples": self.settings.min_new_samples,
            "retrain_queued": list(self.requests.reasons),
        }
