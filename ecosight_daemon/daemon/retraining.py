"""Retraining as the loop sees it: the trigger policy and the review trigger (when), the
retrain thread (how, one at a time), the drift check between them, and the last outcome for
the status."""

from __future__ import annotations

import time
from typing import Any

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.inbox import Inbox, RetrainFinished
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.daemon.retrain_thread import RetrainRunner
from ecosight_daemon.daemon.review_trigger import ReviewTrigger
from ecosight_daemon.daemon.trigger_policy import TriggerPolicy
from ecosight_daemon.review.queue import ReviewQueue
from ecosight_daemon.store.database import Database
from ecosight_daemon.versions.drift import current_model_accuracy
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retrain import trained_hashes
from ecosight_daemon.versions.retrain_lock import finish_interrupted_promotion


class Retraining:
    def __init__(self, settings: Settings, registry: ModelRegistry, inbox: Inbox, events: EventLog,
                 metrics: DaemonMetrics) -> None:
        self.policy = TriggerPolicy(settings.triggers)
        self.runner = RetrainRunner(lambda outcome: inbox.put(RetrainFinished(outcome)),
                                    lambda progress: events.add("progress", **progress.as_dict()))
        self.last_entry: dict[str, Any] | None = None  # the last attempt's log entry
        self._registry = registry
        self._inbox = inbox
        self._events = events
        self._metrics = metrics
        self._review_trigger = ReviewTrigger(settings.review.retrain_after)

    @property
    def running(self) -> bool:
        return self.runner.running

    def last_started(self) -> float:
        """When the last retrain began (wall clock), from this run or the log; 0 if none did."""
        last = self.last_entry
        if last is None:
            history = self._registry.retraining_log()
            last = history[-1] if history else {}
        return float(last.get("started_at") or 0.0)

    def start_up(self, settings: Settings) -> None:
        self.policy.baseline = trained_hashes(self._registry)
        self.runner.warm_up(settings)

    def corpus_changed(self) -> None:
        self.policy.corpus_changed()

    def request(self, reason: str) -> None:
        self.policy.request(reason, self.runner.running)

    def check(self, now: float, settings: Settings, store: Database, embedding_burst: bool,
              review: ReviewQueue | None) -> None:
        """Count new samples (and measure drift on them) when due, and review clips; start a
        run when a trigger fired."""
        if review is not None:
            why = self._review_trigger.check(now, time.time(), review, self.last_started, self.runner.running)
            if why is not None:
                self.request(why)
        if self.policy.count_due(now, embedding_burst=embedding_burst):
            new = self.policy.count(now, store.clips.training_hashes(), self.runner.running)
            if new is not None:
                accuracy = current_model_accuracy(store.clips, self._registry, new, store.clips.model_id or "")
                self.policy.drift_measured(accuracy, len(new))
        if self.policy.start_due(self.runner.running):
            self.runner.start(settings, self.policy.take(store.clips.training_hashes()))

    def finished(self, message: RetrainFinished, settings: Settings, stopping: bool) -> None:
        self.last_entry = entry = message.outcome.log_entry()
        self._metrics.retrain_finished(entry)
        self._events.add("retrain", **{key: entry[key] for key in ("version", "status", "reason", "trigger_reason")})
        self.runner.finished(settings, keep_going=not stopping)
        self.policy.corpus_changed()  # files that arrived meanwhile may reach the threshold
        finish_interrupted_promotion(self._registry)

    def stop(self) -> None:
        """Stop a running retrain; its outcome (recorded as failed) becomes the last entry."""
        if self.runner.stop():
            for message in self._inbox.drain(timeout=0):
                if isinstance(message, RetrainFinished):
                    self.last_entry = message.outcome.log_entry()
            finish_interrupted_promotion(self._registry)
