"""One retrain at a time per models_dir (an flock the kernel drops if the holder dies), and
finishing a promotion a crash or a full disk interrupted, under that lock."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ecosight_daemon.errors import EXIT_TEMPFAIL, EcosightError
from ecosight_daemon.util.durable import free_space
from ecosight_daemon.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)

LOCK_FILE = ".retrain.lock"


class RetrainBusy(EcosightError):
    exit_code = EXIT_TEMPFAIL


@contextmanager
def retrain_lock(models_dir: Path) -> Iterator[None]:
    """An exclusive flock on models_dir/.retrain.lock; the kernel drops it if we die."""
    models_dir.mkdir(parents=True, exist_ok=True)
    lock_path = models_dir / LOCK_FILE
    with open(lock_path, "a+b", buffering=0) as handle:  # unbuffered: a full disk fails here, not at close
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().decode(errors="replace").strip() or "another process"
            raise RetrainBusy(f"Retraining already in progress (pid {holder}); wait for it to finish") from exc
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()).encode())
        except OSError as exc:
            raise EcosightError(
                f"cannot write {lock_path}: {exc} ({free_space(models_dir)} free on its disk); "
                f"free some space under {models_dir}, then retry"
            ) from exc
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def recover_at_start(registry: ModelRegistry) -> None:
    """Finish a promotion a crash interrupted, unless a running retrain holds the lock
    (it finishes any promotion itself)."""
    try:
        with retrain_lock(registry.root):
            recovered = registry.recover()
    except RetrainBusy:
        logger.info("a retrain holds %s; it finishes any promotion itself", registry.root)
        return
    if recovered:
        logger.info("completed the interrupted promotion of %s", recovered)


def finish_interrupted_promotion(registry: ModelRegistry) -> None:
    """A promotion that failed part-way (disk full) is finished as soon as it can be."""
    if not registry.promotion_pending():
        return
    try:
        with retrain_lock(registry.root):
            registry.recover()
    except (RetrainBusy, OSError) as exc:
        logger.error("an interrupted promotion is still to be finished (%s); will retry", exc)
