"""What a detection sets off: every class counted in Prometheus; a priority-class event
(a gun shot) also a log line, an SSE `detection` event and, when configured, a webhook
POST. The webhook has its own thread and a bounded queue: a slow or dead receiver delays
nothing else, and each alert is retried with back-off before it is dropped with a log line.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any

from ecosight_daemon.cache.recordings import StoredDetection
from ecosight_daemon.config import AlertSettings
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.detection.clock import iso_utc_at
from ecosight_daemon.util.printable import printable

logger = logging.getLogger(__name__)
WEBHOOK_QUEUE = 1000  # alerts waiting for the webhook; past it the oldest is dropped (and logged)


def alert_payload(detection: StoredDetection) -> dict[str, Any]:
    """The JSON a webhook receives (and the SSE event carries)."""
    def clock(offset_s: float) -> str | None:
        return iso_utc_at(detection.recording_start_utc, offset_s)

    return {"detection_id": detection.id, "class": detection.label, "score": round(detection.score, 4),
            "clock_time": clock(detection.peak_s), "start_utc": clock(detection.start_s),
            "end_utc": clock(detection.end_s), "recording": detection.path, "start_s": detection.start_s,
            "end_s": detection.end_s, "peak_s": detection.peak_s, "model_version": detection.model_version}


class Alerts:
    def __init__(self, settings: AlertSettings, events: EventLog, metrics: DaemonMetrics,
                 priority_class: str) -> None:
        self._events = events
        self._metrics = metrics
        self._priority = priority_class
        self._webhook = Webhook(settings) if settings.webhook_url else None

    def detected(self, detection: StoredDetection) -> None:
        self._metrics.detections.labels(detection.label).inc()
        if detection.label != self._priority:
            return
        payload = alert_payload(detection)
        logger.warning("DETECTION %s at %s in %s (%.2f-%.2f s, score %.2f, model %s)", detection.label,
                       payload["clock_time"] or "unknown clock time", printable(detection.path), detection.start_s,
                       detection.end_s, detection.score, detection.model_version)
        self._events.add("detection", **payload)
        if self._webhook is not None:
            self._webhook.send(payload)

    def close(self) -> None:
        if self._webhook is not None:
            self._webhook.close()


class Webhook:
    def __init__(self, settings: AlertSettings) -> None:
        self._url = settings.webhook_url
        self._timeout_s = settings.webhook_timeout_s
        self._attempts = settings.webhook_attempts
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(WEBHOOK_QUEUE)
        self._stopping = threading.Event()
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name="ecosight-webhook", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                    logger.error("webhook queue full (%d): alert %s dropped", WEBHOOK_QUEUE, dropped["detection_id"])
                except queue.Empty:
                    pass

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)
        if self._queue.qsize():
            logger.warning("%d webhook alerts not delivered at shutdown (they are in the cache's detections)",
                           self._queue.qsize())

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                payload = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._deliver(payload)

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        for attempt in range(1, self._attempts + 1):
            request = urllib.request.Request(self._url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:
                    answer.read(1024)
                self.delivered += 1
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                why = exc
            if attempt == self._attempts or self._stopping.wait(min(60.0, 2.0 ** (attempt - 1))):
                break
        logger.error("webhook %s: alert %s not delivered after %d attempts (%s)", self._url,
                     payload["detection_id"], attempt, why)
