"""When to retrain: the coalescing retrain request, and APScheduler wiring (enqueue only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

logger = logging.getLogger(__name__)

MISFIRE_GRACE_S = 3600  # a run missed while the machine slept still happens within an hour


def cron_trigger(expression: str) -> CronTrigger:
    """5 fields (minute hour day month weekday) or 6 with seconds first."""
    fields = expression.split()
    if len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=weekday)
    return CronTrigger.from_crontab(expression)


@dataclass
class RetrainRequests:
    """Reasons to retrain that arrived since the last run started; many merge into one run."""

    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def pending(self) -> bool:
        return bool(self.reasons)

    def take(self) -> str:
        merged = "; ".join(self.reasons)
        self.reasons.clear()
        return merged


class ScheduledRetrains:
    """The configured schedule, if any; replaced when a reload changes the expression."""

    def __init__(self, enqueue: Callable[[], None]) -> None:
        self._enqueue = enqueue
        self._expression = ""
        self._schedule: RetrainSchedule | None = None

    def apply(self, expression: str) -> None:
        if expression == self._expression:
            return
        self.stop()
        self._expression = expression
        if expression.strip():
            self._schedule = RetrainSchedule(expression, self._enqueue)
            self._schedule.start()
            logger.info("scheduled retrains: %s (next %s)", expression, self._schedule.next_run())

    def next_run(self) -> datetime | None:
        return self._schedule.next_run() if self._schedule is not None else None

    def stop(self) -> None:
        if self._schedule is not None:
            self._schedule.stop()
            self._schedule = None


class RetrainSchedule:
    """A BackgroundScheduler whose only job puts a retrain request on the inbox."""

    def __init__(self, expression: str, enqueue: Callable[[], None]) -> None:
        self._scheduler = BackgroundScheduler(daemon=True, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S,
        })
        self._job = self._scheduler.add_job(enqueue, cron_trigger(expression), id="scheduled-retrain",
                                            name="scheduled retrain")

    def start(self) -> None:
        self._scheduler.start()

    def next_run(self) -> datetime | None:
        next_run: datetime | None = self._job.next_run_time
        return next_run

    def stop(self) -> None:
        self._scheduler.shutdown(wait=True)
