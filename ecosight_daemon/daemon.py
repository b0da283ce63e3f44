"""The daemon: one owner (the main thread), one inbox, named states.

Signal handlers, the watchdog observer, APScheduler and the retrain runner only put
messages on the inbox. The main thread owns the SQLite connection, the state and every
decision: `step()` waits on the inbox, handles what arrived, then does housekeeping
(settled files, rescans, one embedding batch, triggers, status, systemd watchdog).
The rooms it delegates to: `Indexer` (files), `TriggerPolicy` (when to retrain),
`RetrainRunner` (the run itself), `status.build_status` (the status document).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from . import pause
from .artifacts import ModelRegistry
from .cache_reports import CacheReports
from .config import Settings, reload_settings
from .drift import current_model_accuracy
from .embedder import Embedder, remember_audioset_head
from .features import needs_audioset_head
from .inbox import FileChanged, Inbox, Message, ReloadConfig, Rescan, RetrainFinished, RetrainRequested, Stop
from .indexer import Indexer
from .retrain import finish_interrupted_promotion, recover_at_start, trained_hashes
from .retrain_runner import RetrainRunner
from .scheduling import ScheduledRetrains
from .status import HEARTBEAT_S, DaemonState, StatusInputs, build_status, write_status
from .store import EmbeddingStore
from .systemd import SystemdNotifier
from .trigger_policy import TriggerPolicy
from .watcher import SupervisedWatcher

logger = logging.getLogger(__name__)

SETTLE_POLL_S = 0.1  # how often files waiting to settle are looked at
STORAGE_RETRY_S = 5.0  # pause after a failed write (disk full, I/O error) before trying again
STORAGE_ERRORS = (sqlite3.OperationalError, OSError)


class Daemon:
    def __init__(self, settings: Settings, load_embedder: Callable[[str], Embedder],
                 notifier: SystemdNotifier | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._load_embedder = load_embedder
        self._notifier = notifier or SystemdNotifier()
        self._clock = clock
        self.inbox = Inbox()
        self._registry = ModelRegistry(settings.paths.models_dir)
        self._policy = TriggerPolicy(settings.triggers)
        self._runner = RetrainRunner(lambda outcome: self.inbox.put(RetrainFinished(outcome)))
        self._last_retrain: dict[str, Any] | None = None
        self._stop_signals = 0
        self.state = DaemonState.STARTING
        self.stopped = False
        self._started_wall = time.time()
        self.store: EmbeddingStore | None = None
        self._reports: CacheReports | None = None
        self._indexer: Indexer | None = None
        self._watcher: SupervisedWatcher | None = None
        self._schedule = ScheduledRetrains(lambda: self.request_retrain("schedule"))
        self._next_heartbeat = 0.0
        self._next_watchdog = 0.0
        self._storage_error: str | None = None
        self._status_error: str | None = None
        self._storage_retry_at = 0.0

    # --- producers: they only enqueue ---------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only queue: logging or touching SQLite here could deadlock on a lock the
        # interrupted main thread holds. A second stop signal exits at once, which is
        # safe because every write is a transaction or an atomic replace.
        if signum == signal.SIGHUP:
            self.inbox.put(ReloadConfig())
            return
        self._stop_signals += 1
        if self._stop_signals > 1:
            os._exit(128 + signum)
        self.inbox.put(Stop(signal.Signals(signum).name))

    def request_retrain(self, reason: str) -> None:
        self.inbox.put(RetrainRequested(reason))

    def request_stop(self, reason: str = "requested") -> None:
        self.inbox.put(Stop(reason))

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        logger.info("starting (pid %d) with %s", os.getpid(), settings.describe())
        pause.warn_if_armed(logger)
        self._registry.ensure()
        self._write_status()
        recover_at_start(self._registry)
        self.store = EmbeddingStore.open(settings.cache_path, settings.embedding.storage_dtype)
        self._reports = CacheReports(self.store)
        embedder = self._load_embedder(settings.embedding.yamnet_handle)
        self.store.adopt_model(embedder.model_id, embedder.fingerprint)
        if needs_audioset_head(settings.training.pooling):
            remember_audioset_head(self.store, embedder)
        self._policy.baseline = trained_hashes(self._registry)
        settings.paths.audio_dir.mkdir(parents=True, exist_ok=True)
        self._indexer = Indexer(settings, self.store, embedder, self._clock)
        self._watcher = SupervisedWatcher(settings.paths.audio_dir, self.inbox.put_file_event,
                                          settings.watch.polling, settings.watch.poll_interval_s, self._clock)
        self._watcher.start()
        self._schedule.apply(settings.triggers.schedule)
        self._runner.warm_up(settings)
        self._notifier.ready("reconciling")
        self.inbox.put(Rescan("startup"))

    def run(self) -> int:
        self.start()
        while not self.stopped:
            self.step(timeout=0.5)
        return 0

    def step(self, timeout: float) -> None:
        """Handle one inbox batch, then housekeeping. Waits up to `timeout` for the inbox
        only when there is nothing to embed and nothing settling."""
        assert self._indexer is not None, "start() first"
        if self._indexer.more_to_embed:
            timeout = 0.0
        elif len(self._indexer.tracker):
            timeout = min(timeout, SETTLE_POLL_S)
        for message in self.inbox.drain(timeout):
            try:
                self._handle(message)
            except STORAGE_ERRORS as exc:
                self._storage_failed(exc)
        if self.state is DaemonState.STOPPING:
            self._shutdown()
            return
        if self._clock() < self._storage_retry_at:
            self._keep_alive(self._clock())
            return
        try:
            self._housekeeping(self._indexer)
        except STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return
        if self._storage_error is not None:
            logger.warning("writing works again (after: %s); rescanning %s for anything missed",
                           self._storage_error, self.settings.paths.audio_dir)
            self._storage_error = None
            self.inbox.put(Rescan("after a storage error"))
            finish_interrupted_promotion(self._registry)

    def _storage_failed(self, exc: Exception) -> None:
        """A write failed (disk full, read-only, I/O error): keep running, retry later. Each
        write is one transaction or an atomic replace, so a failed one leaves the previous
        state; what it would have recorded is found again by the rescan after recovery."""
        message = f"{type(exc).__name__}: {exc}"
        if message != self._storage_error:
            logger.error("cannot write under %s (%s); retrying every %.0f s", self.settings.paths.models_dir,
                         message, STORAGE_RETRY_S)
        self._storage_error = message
        self._storage_retry_at = self._clock() + STORAGE_RETRY_S
        self._write_status()

    def _handle(self, message: Message) -> None:
        assert self._indexer is not None
        if isinstance(message, Stop):
            logger.info("stopping (%s)", message.reason)
            self._set_state(DaemonState.STOPPING)
        elif isinstance(message, RetrainFinished):
            self._retrain_finished(message)
        elif self.state is DaemonState.STOPPING:
            return  # no new work once stopping
        elif isinstance(message, FileChanged):
            if self._indexer.file_event(message.event):
                self._policy.corpus_changed()
        elif isinstance(message, Rescan):
            self._rescan(message.reason)
        elif isinstance(message, RetrainRequested):
            self._policy.request(message.reason, self._runner.running)
        elif isinstance(message, ReloadConfig):
            self._reload_config()
            self._policy.request("SIGHUP", self._runner.running)

    # --- housekeeping -----------------------------------------------------------------------

    def _housekeeping(self, indexer: Indexer) -> None:
        assert self.store is not None
        now = self._clock()
        if indexer.refresh_settled(now):
            self._policy.corpus_changed()
        why = indexer.rescan_due(now, self._watcher is not None and self._watcher.check(now))
        if why is not None:
            self._rescan(why)
        if indexer.embed_batch(starting=lambda: self._set_busy(DaemonState.EMBEDDING)):
            self._policy.corpus_changed()
        if self._policy.count_due(now, embedding_burst=indexer.more_to_embed):
            new = self._policy.count(now, self.store.training_hashes(), self._runner.running)
            if new is not None:
                accuracy = current_model_accuracy(self.store, self._registry, new, self.store.model_id or "")
                self._policy.drift_measured(accuracy, len(new))
        if self._policy.start_due(self._runner.running):
            self._runner.start(self.settings, self._policy.take(self.store.training_hashes()))
        if self._runner.running:
            self._set_state(DaemonState.TRAINING)
        elif self.state is not DaemonState.IDLE and not indexer.pending():
            self._set_state(DaemonState.IDLE)
        self._keep_alive(now)

    def _rescan(self, why: str) -> None:
        assert self._indexer is not None
        self._set_busy(DaemonState.RECONCILING)
        if self._indexer.rescan(why):
            self._policy.corpus_changed()

    def _keep_alive(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._write_status()
        if self._notifier.watchdog_interval_s and now >= self._next_watchdog:
            # Only a turning loop with a working watcher (or its rescans) reaches here
            # healthy; a stuck loop never pings, so systemd restarts it.
            self._notifier.watchdog()
            self._next_watchdog = now + self._notifier.watchdog_interval_s

    def _set_busy(self, state: DaemonState) -> None:
        if self.state is not DaemonState.TRAINING:  # training shows as long as it lasts
            self._set_state(state)

    def _set_state(self, state: DaemonState) -> None:
        if state is self.state:
            return
        logger.info("state: %s -> %s", self.state.value, state.value)
        self.state = state
        self._notifier.status(state.value)
        self._write_status()

    def _reload_config(self) -> None:
        fresh = reload_settings(self.settings)
        if fresh is not None:
            self.settings = fresh
            self._policy.settings = fresh.triggers
            self._schedule.apply(fresh.triggers.schedule)

    def _retrain_finished(self, message: RetrainFinished) -> None:
        self._last_retrain = message.outcome.log_entry()
        self._runner.finished(self.settings, keep_going=self.state is not DaemonState.STOPPING)
        self._policy.corpus_changed()  # files that arrived meanwhile may reach the threshold
        finish_interrupted_promotion(self._registry)

    # --- status and shutdown ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return build_status(StatusInputs(
            state=self.state, settings=self.settings, started_wall=self._started_wall, reports=self._reports,
            registry=self._registry, inbox=self.inbox, indexer=self._indexer, policy=self._policy,
            retrain_running=self._runner.running, last_retrain=self._last_retrain, schedule=self._schedule,
            watcher=self._watcher, storage_error=self._storage_error,
        ))

    def _write_status(self) -> None:
        try:
            write_status(self.settings.paths.models_dir, self.status())
            self._status_error = None
        except OSError as exc:  # a full disk must not stop the daemon
            if str(exc) != self._status_error:
                logger.error("cannot write the status file (retrying every %.0f s): %s", HEARTBEAT_S, exc)
            self._status_error = str(exc)
        self._next_heartbeat = self._clock() + HEARTBEAT_S

    def _shutdown(self) -> None:
        self._notifier.stopping()
        if self._runner.stop():
            for message in self.inbox.drain(timeout=0):  # the stopped run's outcome
                if isinstance(message, RetrainFinished):
                    self._last_retrain = message.outcome.log_entry()
            finish_interrupted_promotion(self._registry)
        if self._watcher is not None:
            self._watcher.stop()
        self._schedule.stop()
        self.state = DaemonState.STOPPED
        self._write_status()
        if self.store is not None:
            self.store.close()
            self.store, self._reports = None, None
        self.stopped = True
        logger.info("stopped")
