"""Make an earlier version current again: for `ecosight-daemon rollback` with no daemon
running, and for the running daemon when asked over HTTP. Atomic and logged."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from ecosight_daemon.errors import EcosightError
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retrain_lock import retrain_lock
from ecosight_daemon.versions.retraining_log import RetrainStatus

logger = logging.getLogger(__name__)


class UnknownVersion(EcosightError):
    """The version asked for does not exist."""


def roll_back(registry: ModelRegistry, version: str | None) -> tuple[str | None, str]:
    """(previous, now current). Raises UnknownVersion (checked first, so the answer does
    not wait for a retrain), RetrainBusy while a retrain holds the lock, or EcosightError
    (nothing to roll back to), each with what to do."""
    if version is not None:
        _require_known(registry, version)
    with retrain_lock(registry.root):
        registry.recover()
        current = registry.current_version()
        target = version or registry.previous_promoted(current)
        if target is None:
            raise EcosightError("no earlier promoted version to roll back to; see `ecosight-daemon history`")
        _require_known(registry, target)
        registry.promote(target)
        registry.append_log({
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "trigger_reason": "rollback", "version": target, "status": RetrainStatus.ROLLED_BACK.value,
            "promoted": True, "forced": True, "reason": f"operator rolled back from {current} to {target}",
            "replaced_version": current, "metrics": None,
        })
    logger.info("rolled back from %s to %s", current, target)
    return current, target


def _require_known(registry: ModelRegistry, version: str) -> None:
    known = [m["version"] for m in registry.versions()]
    if version not in known:
        raise UnknownVersion(f"no version named {version!r}; the versions are: {', '.join(known) or 'none'} "
                             "(see `ecosight-daemon history`)")
