"""The daemon's named states: in the log, systemd's STATUS=, the status file and /metrics."""

from __future__ import annotations

from enum import Enum


class DaemonState(str, Enum):
    STARTING = "starting"
    RECONCILING = "reconciling"
    EMBEDDING = "embedding"
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    STOPPED = "stopped"
