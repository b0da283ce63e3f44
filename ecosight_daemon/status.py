"""The status file: what the daemon is doing, written atomically into models_dir and
read by `ecosight-daemon status`."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Any

from .artifacts import read_json, write_json
from .instance_lock import pid_alive

STATUS_FILE = "daemon_status.json"
HEARTBEAT_S = 2.0
STALE_AFTER_S = 30.0  # no update for this long while the pid lives: wedged


class DaemonState(str, Enum):
    STARTING = "starting"
    RECONCILING = "reconciling"
    EMBEDDING = "embedding"
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    STOPPED = "stopped"


def status_path(models_dir: Path) -> Path:
    return models_dir / STATUS_FILE


def write_status(models_dir: Path, status: dict[str, Any]) -> None:
    write_json(status_path(models_dir), {**status, "updated_at": time.time()})


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
        return status, f"the status file is stale ({age:.0f} s old) although pid {status['pid']} lives; the daemon may be stuck"
    return status, None
