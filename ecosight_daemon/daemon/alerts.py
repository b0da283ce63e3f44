"""What a detection sets off: every class counted in Prometheus; a priority-class event
(a gun shot) also a log line, an SSE `detection` event and, when configured, a webhook
POST (daemon/webhook.py: its own thread, a deadline per attempt, optional signature).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ecosight_daemon.config import AlertSettings
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.daemon.webhook import Webhook
from ecosight_daemon.detection.detection_view import detection_view
from ecosight_daemon.store.recordings import StoredDetection
from ecosight_daemon.util.printable import printable
from ecosight_daemon.util.secret_file import read_secret

logger = logging.getLogger(__name__)


class Alerts:
    def __init__(self, settings: AlertSettings, events: EventLog, metrics: DaemonMetrics,
                 priority_class: str) -> None:
        self._events = events
        self._metrics = metrics
        self._priority = priority_class
        self._webhook = webhook_for(settings)

    def detected(self, detection: StoredDetection) -> None:
        self._metrics.detections.labels(detection.label).inc()
        if detection.label != self._priority:
            return
        payload = detection_view(detection)
        logger.warning("DETECTION %s at %s in %s (%.2f-%.2f s, score %.2f, model %s)", detection.label,
                       payload["clock_time"] or "unknown clock time", printable(detection.path), detection.start_s,
                       detection.end_s, detection.score, detection.model_version)
        self._events.add("detection", **payload)
        if self._webhook is not None:
            self._webhook.send(payload)

    def close(self) -> None:
        if self._webhook is not None:
            self._webhook.close()


def webhook_for(settings: AlertSettings) -> Webhook | None:
    if not settings.webhook_url:
        return None
    secret = (read_secret(settings.webhook_secret_file, "alerts.webhook_secret_file")
              if settings.webhook_secret_file != Path("") else None)
    return Webhook(settings.webhook_url, settings.webhook_timeout_s, settings.webhook_attempts, secret)
