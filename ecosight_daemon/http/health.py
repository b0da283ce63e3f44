"""Whether the daemon is healthy, read from the status the loop publishes (GET /health, the
Status page)."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.daemon.status import HEARTBEAT_S

UNHEALTHY_AFTER_S = 5 * HEARTBEAT_S  # no status update for this long: the loop is not turning


def health_problem(status: dict[str, Any], now: float) -> str | None:
    """Why the daemon is not healthy, or None: the loop turns and the watcher lives."""
    if not status:
        return "the daemon has not started its loop yet"
    if status.get("state") in ("stopping", "stopped"):
        return f"the daemon is {status['state']}"
    age = now - float(status.get("updated_at", 0))
    if age > UNHEALTHY_AFTER_S:
        return f"the main loop has not reported for {age:.0f} s; it may be stuck"
    if status.get("watcher") != "watching":
        return f"the file watcher is not running ({status.get('watcher_problem')}); rescans stand in"
    if status.get("storage_error"):
        return f"cannot write: {status['storage_error']}"
    return None
