"""The status document: what the daemon is doing, built from its parts, written
atomically into models_dir and read by `ecosight-daemon status`."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecosight_daemon.daemon.states import DaemonState
from ecosight_daemon.util.durable import read_json, write_json
from ecosight_daemon.util.instance_lock import pid_alive
from ecosight_daemon.versions.registry import ModelRegistry

if TYPE_CHECKING:
    from ecosight_daemon.config import Settings
    from ecosight_daemon.daemon.inbox import Inbox
    from ecosight_daemon.daemon.indexer import Indexer
    from ecosight_daemon.daemon.recordings import Recordings
    from ecosight_daemon.daemon.schedule import ScheduledRetrains
    from ecosight_daemon.daemon.trigger_policy import TriggerPolicy
    from ecosight_daemon.daemon.watcher import SupervisedWatcher
    from ecosight_daemon.review.queue import ReviewQueue
    from ecosight_daemon.store.reports import CacheReports

logger = logging.getLogger(__name__)

STATUS_FILE = "daemon_status.json"
HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0  # no update for this long while the pid lives: wedged
FAILED_FILES_SHOWN = 50  # the newest failed files (with reasons) in the status document


@dataclass(frozen=True)
class StatusInputs:
    """The daemon's parts the status document is read from (None: not started yet)."""

    state: DaemonState
    settings: Settings
    started_wall: float
    reports: CacheReports | None
    registry: ModelRegistry
    inbox: Inbox
    indexer: Indexer | None
    policy: TriggerPolicy
    retrain_running: bool
    last_retrain: dict[str, Any] | None
    schedule: ScheduledRetrains
    watcher: SupervisedWatcher | None
    storage_error: str | None
    http_url: str | None = None
    embedding_runtime: str | None = None
    recordings: Recordings | None = None
    review: ReviewQueue | None = None


def build_status(parts: StatusInputs) -> dict[str, Any]:
    counts = parts.reports.class_counts() if parts.reports is not None else {}
    metadata = parts.registry.current_metadata() or {}
    next_run = parts.schedule.next_run()
    last_retrain = parts.last_retrain
    if last_retrain is None:
        history = parts.registry.retraining_log()
        last_retrain = history[-1] if history else None
    return {
        "state": parts.state.value,
        "pid": os.getpid(),
        "started_at": parts.started_wall,
        "uptime_s": round(time.time() - parts.started_wall, 1),
        "audio_dir": str(parts.settings.paths.audio_dir),
        "models_dir": str(parts.settings.paths.models_dir),
        "classes": {label or "(no class)": c.as_dict() for label, c in counts.items()},
        "pending": sum(c.pending for c in counts.values()),
        "failed": sum(c.failed for c in counts.values()),
        "failed_files": parts.reports.failed_files(FAILED_FILES_SHOWN) if parts.reports is not None else [],
        "settling": len(parts.indexer.tracker) if parts.indexer is not None else 0,
        **parts.inbox.status_fields(),
        "storage_error": parts.storage_error,
        **parts.policy.status_fields(),
        "retrain_running": parts.retrain_running,
        "next_scheduled_run": next_run.isoformat() if next_run else None,
        "model_version": metadata.get("version"),
        "model_metrics": model_metrics(metadata),
        "model_detector": detector_summary(metadata, parts.settings.detection.false_alarms_per_hour),
        "last_retrain": last_retrain,
        "heartbeat_s": HEARTBEAT_S,
        "rescans": parts.indexer.rescans if parts.indexer is not None else 0,
        "folder_rescan_scheduled": parts.indexer is not None and parts.indexer.folder_rescan_scheduled,
        "watcher": None if parts.watcher is None else parts.watcher.mode,
        "watcher_problem": None if parts.watcher is None else parts.watcher.problem,
        "last_scan_at": parts.indexer.last_scan_at if parts.indexer is not None else None,
        "last_embed_at": parts.indexer.last_embed_at if parts.indexer is not None else None,
        "http": parts.http_url,
        "embedding_runtime": parts.embedding_runtime,
        "recordings": parts.recordings.status() if parts.recordings is not None else None,
        "review": parts.review.status() if parts.review is not None else None,
        "tensorflow_loaded": "tensorflow" in sys.modules,  # false with the ONNX runtime until a Keras model loads
    }


def model_metrics(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The current model's test figures with sample sizes and 95% intervals."""
    if not metadata:
        return None
    summary = {key: metadata.get(key) for key in ("accuracy", "macro_f1", "priority_recall")}
    return {**summary, **(metadata.get("test_metrics") or {})}


def detector_summary(metadata: dict[str, Any] | None, budget_per_hour: float) -> dict[str, Any] | None:
    """The current version's event detector: which scorer ranks gun shots, at what threshold,
    and what it did on the gate's sentinel hour (background it never trained on), with a
    `warning` where its false alarms there exceed the budget: the gate lets such a version
    through when the one it replaced was as bad, and an operator should know."""
    figures = (metadata or {}).get("event_detector")
    if not figures:
        return None
    if "skipped" in figures:
        return {"skipped": figures["skipped"]}
    summary: dict[str, Any] = {key: figures.get(key) for key in ("priority_scorer", "threshold", "calibration")}
    sentinel = figures.get("test_split") or {}
    own = sentinel.get("candidate")
    if own:
        rate = float(own["false_alarms_per_hour"])
        summary["sentinel"] = {"hours": sentinel.get("hours"), "shots": sentinel.get("shots"),
                               "recall": own.get("recall"), "false_alarms_per_hour": rate}
        if rate > budget_per_hour:
            summary["warning"] = (f"{rate:g} false alarms an hour on the gate's sentinel hour (background it never "
                                  f"trained on), over the budget of {budget_per_hour:g}: expect more gun-shot alarms "
                                  "than asked for; check them by ear and confirm or reject them on the Review page")
    return summary


def status_path(models_dir: Path) -> Path:
    return models_dir / STATUS_FILE


def write_status(models_dir: Path, status: dict[str, Any]) -> dict[str, Any]:
    document = {**status, "updated_at": time.time()}
    write_json(status_path(models_dir), document)
    return document


class StatusPublisher:
    """Writes the status file every HEARTBEAT_S (and on demand) and keeps the latest
    document in memory, where the HTTP server reads it. A full disk is logged once."""

    def __init__(self, models_dir: Path, clock: Callable[[], float]) -> None:
        self._models_dir = models_dir
        self._clock = clock
        self._next = 0.0
        self._error: str | None = None
        self.latest: dict[str, Any] = {}

    def due(self, now: float) -> bool:
        return now >= self._next

    def publish(self, status: dict[str, Any]) -> None:
        self.latest = {**status, "updated_at": time.time()}  # one reference swap: readers see whole documents
        try:
            write_json(status_path(self._models_dir), self.latest)
            self._error = None
        except OSError as exc:  # a full disk must not stop the daemon
            if str(exc) != self._error:
                logger.error("cannot write the status file (retrying every %.0f s): %s", HEARTBEAT_S, exc)
            self._error = str(exc)
        self._next = self._clock() + HEARTBEAT_S


def read_status(models_dir: Path, now: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(status, problem): problem says why the status cannot be trusted, or None."""
    try:
        status = read_json(status_path(models_dir))
    except (json.JSONDecodeError, OSError) as exc:
        return None, f"the status file {status_path(models_dir)} is unreadable ({exc})"
    if status is None:
        return None, f"no daemon has run with models_dir {models_dir} (no {STATUS_FILE})"
    now = time.time() if now is None else now
    if status.get("state") == DaemonState.STOPPED.value:
        return status, "the daemon is not running (it stopped cleanly)"
    if not pid_alive(int(status.get("pid", 0))):
        return status, f"the daemon is not running (pid {status.get('pid')} is gone; it did not stop cleanly)"
    age = now - float(status.get("updated_at", 0))
    if age > STALE_AFTER_S:
        return status, (f"the status file is stale ({age:.0f} s old) although pid {status['pid']} lives; "
                        "the daemon may be stuck")
    return status, None
