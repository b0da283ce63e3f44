"""retraining_log.json: one entry per attempt (promoted, rejected, failed, or an operator's
rollback), what an entry holds, and how the file is read and appended to."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ecosight_daemon.util.durable import read_json, write_json

logger = logging.getLogger(__name__)

LOG_FILE = "retraining_log.json"


class RetrainStatus(str, Enum):
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"  # an operator's rollback, in the log beside the runs
    UNCHANGED = "unchanged"  # the same inputs as the newest version: not trained again, no new version


@dataclass
class RetrainOutcome:
    """What one attempt did; its `log_entry` goes into retraining_log.json."""

    version: str | None
    promoted: bool
    reason: str
    trigger: str
    forced: bool = False
    metrics: dict[str, Any] | None = None
    incumbent_metrics: dict[str, Any] | None = None
    replaced_version: str | None = None
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    new_samples: int = 0
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock, seconds since the epoch
    status: RetrainStatus = RetrainStatus.FAILED
    gate: dict[str, Any] | None = None  # the rule that decided and its statistics
    input_digest: str | None = None  # of everything the result depends on (training/input_digest.py)
    event_detector: dict[str, Any] | None = None  # its out-of-fold figures, or why there is none

    def log_entry(self) -> dict[str, Any]:
        summary = None if not self.metrics else metrics_summary(self.metrics)
        return {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "trigger_reason": self.trigger,
            "version": self.version,
            "status": self.status.value,
            "promoted": self.promoted,
            "forced": self.forced,
            "reason": self.reason,
            "replaced_version": self.replaced_version,
            "samples": self.samples,
            "new_samples": self.new_samples,
            "started_at": round(self.started_at, 3),
            "duration_s": round(self.seconds, 2),
            "metrics": summary,
            "gate": self.gate,
        }


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test-split figures a person reads, each with its sample size and 95% interval."""
    return {
        "test_samples": metrics["samples"],
        "accuracy": metrics["accuracy"],
        "accuracy_interval": metrics.get("accuracy_interval"),
        "macro_f1": metrics["macro_f1"],
        "macro_f1_interval": metrics.get("macro_f1_interval"),
        "recall": {c: m["recall"] for c, m in metrics["per_class_metrics"].items()},
        "precision": {c: m["precision"] for c, m in metrics["per_class_metrics"].items()},
        "support": {c: m["support"] for c, m in metrics["per_class_metrics"].items()},
        "per_class": {
            c: {key: m.get(key) for key in ("recall", "recall_interval", "support", "precision",
                                            "precision_interval", "predicted")}
            for c, m in metrics["per_class_metrics"].items()
        },
    }


def read_log(models_dir: Path) -> list[dict[str, Any]]:
    try:
        entries = read_json(models_dir / LOG_FILE, default=[])
    except (ValueError, UnicodeDecodeError):  # set aside by the next append
        return []
    return entries if isinstance(entries, list) else []


def append_to_log(models_dir: Path, entry: dict[str, Any]) -> None:
    """Append one entry; a log that is not valid JSON is kept aside, never overwritten."""
    path = models_dir / LOG_FILE
    try:
        entries = read_json(path, default=[])
        if not isinstance(entries, list):
            raise ValueError("not a JSON list")
    except ValueError as exc:
        aside = path.with_name(f"{LOG_FILE}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        logger.error("%s was not valid (%s); moved it to %s and started a new log", path, exc, aside)
        entries = []
    if _repeats(entries[-1:], entry):
        entry = {**entry, "repeats": int(entries[-1].get("repeats", 1)) + 1}
        entries[-1] = entry  # a storm of requests on unchanged data is one entry, not thousands
    else:
        entries.append(entry)
    write_json(path, entries)


def _repeats(last: list[dict[str, Any]], entry: dict[str, Any]) -> bool:
    """The entry says `unchanged` for the same reason as the one before it."""
    return bool(last) and entry.get("status") == RetrainStatus.UNCHANGED.value and (
        last[0].get("status") == entry["status"] and last[0].get("reason") == entry.get("reason"))
