"""Recent events for the dashboard's live view (`GET /events`): state changes, retrain
progress and notable log lines, numbered, in a bounded ring.

Writers (the main loop, the retrain thread, the logging handler) append and return;
readers (one per open event stream) wait on a condition for anything newer than what
they have seen. A slow or vanished reader costs nothing: it only misses old events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

RING_SIZE = 500


@dataclass(frozen=True)
class Event:
    number: int
    kind: str  # "state", "progress", "log", "retrain"
    data: dict[str, Any]
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "kind": self.kind, "at": round(self.at, 3), **self.data}


class EventLog:
    def __init__(self, size: int = RING_SIZE) -> None:
        self._events: deque[Event] = deque(maxlen=size)
        self._changed = threading.Condition()
        self._next = 1

    def add(self, kind: str, **data: Any) -> None:
        with self._changed:
            self._events.append(Event(self._next, kind, data))
            self._next += 1
            self._changed.notify_all()

    def after(self, number: int, wait_s: float = 0.0) -> list[Event]:
        """Events numbered above `number`, waiting up to `wait_s` for the first one."""
        with self._changed:
            if wait_s > 0 and self._next - 1 <= number:
                self._changed.wait(wait_s)
            return [event for event in self._events if event.number > number]

    @property
    def last_number(self) -> int:
        with self._changed:
            return self._next - 1


class EventLogHandler(logging.Handler):
    """Copies the package's log lines at INFO and above into the event log."""

    def __init__(self, events: EventLog) -> None:
        super().__init__(logging.INFO)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._events.add("log", level=record.levelname, logger=record.name, message=record.getMessage())
        except Exception:  # never let the dashboard's feed break logging
            self.handleError(record)
