"""Prometheus metrics (`GET /metrics`), named by Prometheus conventions: `ecosight_`
prefix, base units, `_total` for counters.

Counters and histograms are updated by the main loop as things happen; gauges are read
at scrape time from the status snapshot the loop publishes, so a scrape never queries
the cache (it costs the same with 14,000 files indexed as with ten).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ecosight_daemon.daemon.states import DaemonState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: they double the output
TRIGGER_KINDS = ("threshold", "schedule", "SIGHUP", "drift", "HTTP")
VERSION_NUMBER = re.compile(r"v(\d+)$")


def trigger_kind(reason: str) -> str:
    """A bounded label for a free-text trigger reason (merged reasons: the first one)."""
    first = reason.split(";")[0].strip()
    for kind in TRIGGER_KINDS:
        if first.startswith(kind):
            return kind.lower()
    return "other"


class DaemonMetrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.embeddings = Counter("ecosight_embeddings_computed", "Files embedded by YAMNet",
                                  registry=self.registry)
        self.cache_hits = Counter("ecosight_embedding_cache_hits",
                                  "Files whose bytes were already embedded (renamed, copied, re-added)",
                                  registry=self.registry)
        self.failures = Counter("ecosight_files_failed", "Files refused with a recorded reason",
                                registry=self.registry)
        self.embed_seconds = Histogram("ecosight_embed_duration_seconds", "YAMNet time per embedded file",
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                       registry=self.registry)
        self.retrains = Counter("ecosight_retrain_runs", "Retraining attempts by trigger and outcome",
                                ["trigger", "outcome"], registry=self.registry)
        self.retrain_seconds = Histogram("ecosight_retrain_duration_seconds", "Time per retraining attempt",
                                         buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600),
                                         registry=self.registry)
        self.gate = Counter("ecosight_gate_decisions", "The promotion gate's decisions",
                            ["decision"], registry=self.registry)
        self.detections = Counter("ecosight_detections", "Events found in long recordings, by class "
                                  "(counted when a recording is first scored)", ["class"], registry=self.registry)
        self.registry.register(_SnapshotCollector(snapshot))

    def retrain_finished(self, log_entry: dict[str, Any]) -> None:
        self.retrains.labels(trigger_kind(str(log_entry.get("trigger_reason", ""))),
                             str(log_entry.get("status"))).inc()
        self.retrain_seconds.observe(float(log_entry.get("duration_s") or 0.0))
        if log_entry.get("gate") is not None:
            self.gate.labels("promote" if log_entry.get("promoted") else "reject").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._snapshot()
        files = GaugeMetricFamily("ecosight_files", "Indexed files by class and state", labels=["class", "state"])
        for label, counts in (status.get("classes") or {}).items():
            for file_state in ("embedded", "pending", "failed"):
                files.add_metric([label, file_state], counts.get(file_state, 0))
        yield files
        state = GaugeMetricFamily("ecosight_daemon_state", "1 for the daemon's current state", labels=["state"])
        for name in DaemonState:
            state.add_metric([name.value], 1.0 if status.get("state") == name.value else 0.0)
        yield state
        yield _gauge("ecosight_inbox_file_events", "File events waiting in the inbox",
                     status.get("queued_file_events", 0))
        yield _gauge("ecosight_settling_files", "Files waiting for their writes to settle", status.get("settling", 0))
        yield _gauge("ecosight_new_samples", "New samples since the last training run", status.get("new_samples", 0))
        yield _gauge("ecosight_new_samples_threshold", "New samples that start a retrain",
                     status.get("min_new_samples", 0))
        yield _gauge("ecosight_retrain_running", "1 while a retrain runs", 1 if status.get("retrain_running") else 0)
        yield _gauge("ecosight_last_scan_timestamp_seconds", "When audio_dir was last rescanned (Unix time)",
                     status.get("last_scan_at") or 0)
        yield _gauge("ecosight_last_embed_timestamp_seconds", "When a file was last embedded (Unix time)",
                     status.get("last_embed_at") or 0)
        yield _gauge("ecosight_watcher_up", "1 while the file watcher runs (0: rescans stand in)",
                     1 if status.get("watcher") == "watching" else 0)
        yield from _model_metrics(status)
        yield from _recording_metrics(status)


def _recording_metrics(status: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    recordings = status.get("recordings") or {}
    by_state = GaugeMetricFamily("ecosight_recordings", "Long recordings by state", labels=["state"])
    for name, count in (recordings.get("by_state") or {}).items():
        by_state.add_metric([name], float(count))
    yield by_state
    yield _gauge("ecosight_recording_hours_analysed", "Hours of long recordings analysed",
                 recordings.get("hours_analysed", 0.0))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _model_metrics(status: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    version = status.get("model_version")
    number = VERSION_NUMBER.match(version or "")
    yield _gauge("ecosight_model_version", "The current model's version number (0: none yet)",
                 int(number.group(1)) if number else 0)
    recall = GaugeMetricFamily("ecosight_model_recall_ratio", "The current model's test recall per class",
                               labels=["class"])
    for label, value in ((status.get("model_metrics") or {}).get("recall") or {}).items():
        if value is not None:
            recall.add_metric([label], float(value))
    yield recall
