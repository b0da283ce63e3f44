"""The retrain schedule: APScheduler wiring that only enqueues, replaced when a reload changes it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from ecosight_daemon.config_checks import cron_trigger

logger = logging.getLogger(__name__)

MISFIRE_GRACE_S = 3600  # a run missed while the machine slept still happens within an hour


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
