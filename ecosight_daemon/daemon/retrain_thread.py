"""Runs one retrain at a time on a worker thread, so the daemon's loop keeps turning
while a model trains, and posts the outcome back on the inbox.

The worker opens its own database connection (SQLite connections stay on the thread
that made them). Between runs a training process is kept warm (TensorFlow imported),
so the next retrain starts at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ecosight_daemon.config import Settings
from ecosight_daemon.store.database import Database
from ecosight_daemon.training.process_handle import TrainingProcess
from ecosight_daemon.training.protocol import Progress
from ecosight_daemon.versions.retrain import retrain
from ecosight_daemon.versions.retraining_log import RetrainOutcome

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 25.0  # a stopping daemon waits this long for the training run to end


def current_log_level() -> str:
    return logging.getLevelName(logging.getLogger().level)


class RetrainRunner:
    def __init__(self, post_outcome: Callable[[RetrainOutcome], None],
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self._post_outcome = post_outcome
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warm_process: TrainingProcess | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, settings: Settings, reason: str) -> None:
        process, self._warm_process = self._warm_process, None
        self._thread = threading.Thread(target=self._work, args=(settings, reason, process),
                                        name="ecosight-retrain", daemon=True)
        logger.info("retraining (%s)", reason)
        self._thread.start()

    def finished(self, settings: Settings, keep_going: bool) -> None:
        """The outcome arrived: the worker is done; warm the next training process."""
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            self._thread = None
        if keep_going:
            self.warm_up(settings)

    def warm_up(self, settings: Settings) -> None:
        if settings.training.keep_warm and self._warm_process is None:
            self._warm_process = TrainingProcess(current_log_level())

    def stop(self) -> bool:
        """Stop a running retrain (it ends at the next epoch) and the warm process.
        True when a run was still going and has now ended."""
        self._stop.set()
        was_running = self._thread is not None
        if self._thread is not None:
            logger.info("stopping the training run")
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._thread = None
        if self._warm_process is not None:
            self._warm_process.close()
            self._warm_process = None
        return was_running

    def _work(self, settings: Settings, reason: str, process: TrainingProcess | None) -> None:
        try:
            store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
        except Exception as exc:
            logger.exception("retrain (%s) could not open the cache", reason)
            self._post_outcome(RetrainOutcome(None, False, f"{type(exc).__name__}: {exc}", reason))
            if process is not None:
                process.close()
            return
        try:
            outcome = retrain(settings, store, reason, should_stop=self._stop.is_set,
                              log_level=current_log_level(), process=process, on_progress=self._on_progress)
        except Exception as exc:  # never let a retrain error take the daemon down
            logger.exception("retrain (%s) failed", reason)
            outcome = RetrainOutcome(None, False, f"{type(exc).__name__}: {exc}", reason)
        finally:
            store.close()
        self._post_outcome(outcome)
