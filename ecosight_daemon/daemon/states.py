"""The daemon's named states (in the log, systemd's STATUS=, the status file and /metrics)
and the one place they change."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum

from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.util.systemd import SystemdNotifier

logger = logging.getLogger(__name__)


class DaemonState(str, Enum):
    STARTING = "starting"
    RECONCILING = "reconciling"
    EMBEDDING = "embedding"
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StateChanges:
    """The daemon's current state and the one way to change it: a log line, systemd's
    STATUS=, an event for /events, and the status document written again."""

    def __init__(self, notifier: SystemdNotifier, events: EventLog, publish: Callable[[], None]) -> None:
        self.current = DaemonState.STARTING
        self._notifier = notifier
        self._events = events
        self._publish = publish

    def set(self, state: DaemonState) -> None:
        if state is self.current:
            return
        logger.info("state: %s -> %s", self.current.value, state.value)
        self.current = state
        self._notifier.status(state.value)
        self._events.add("state", state=state.value)
        self._publish()

    def set_busy(self, state: DaemonState) -> None:
        """Reconciling or embedding, unless training: training shows as long as it lasts."""
        if self.current is not DaemonState.TRAINING:
            self.set(state)
