"""The daemon: one owner (the main thread), one inbox, named states.

Signal handlers, the watchdog observer, APScheduler and the retrain runner only put
messages on the inbox. The main thread owns the SQLite connection, the state and every
decision: `step()` waits on the inbox, handles what arrived, then does housekeeping
(settled files, rescans, one embedding batch, triggers, status, systemd watchdog).
The parts it delegates to: `Indexer` (files), `Retraining` (when to retrain, and the
run itself on its thread), `StateChanges` (the state), `status.build_status` and `StatusPublisher` (the
status document), a `FrontEnd` if the composer gives one (the HTTP API, which reads the
published status and sends messages like any other producer).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any, Protocol

from ecosight_daemon.config import Settings
from ecosight_daemon.config_file import reload_settings
from ecosight_daemon.daemon.alerts import Alerts
from ecosight_daemon.daemon.client_requests import answer_review, answer_rollback
from ecosight_daemon.daemon.events import EventLog, EventLogHandler
from ecosight_daemon.daemon.inbox import (
    FileChanged,
    Inbox,
    Message,
    ReloadConfig,
    Rescan,
    RetrainFinished,
    RetrainRequested,
    ReviewDecision,
    Rollback,
    Stop,
)
from ecosight_daemon.daemon.indexer import Indexer
from ecosight_daemon.daemon.predictions import PredictionWorker
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.daemon.recordings import Recordings
from ecosight_daemon.daemon.retraining import Retraining
from ecosight_daemon.daemon.schedule import ScheduledRetrains
from ecosight_daemon.daemon.signals import SignalsToInbox
from ecosight_daemon.daemon.start_up import open_parts
from ecosight_daemon.daemon.states import DaemonState, StateChanges
from ecosight_daemon.daemon.status import StatusInputs, StatusPublisher, build_status
from ecosight_daemon.daemon.storage_trouble import STORAGE_ERRORS, StorageTrouble
from ecosight_daemon.daemon.watcher import SupervisedWatcher
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.review.queue import ReviewQueue
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.reports import CacheReports
from ecosight_daemon.util import pause
from ecosight_daemon.util.systemd import SystemdNotifier
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retrain_lock import finish_interrupted_promotion, recover_at_start

logger = logging.getLogger(__name__)

SETTLE_POLL_S = 0.1  # how often files waiting to settle are looked at


class FrontEnd(Protocol):
    """The HTTP side as the loop knows it: made (socket bound) before the slow start, started
    once the loop is ready, stopped at shutdown. http.front.HttpFrontEnd is the real one."""

    url: str

    def start(self, daemon: Any, events: EventLog, metrics: DaemonMetrics) -> None: ...
    def stop(self) -> None: ...


class Daemon:
    def __init__(self, settings: Settings, load_embedder: Callable[[str], Embedder],
                 notifier: SystemdNotifier | None = None, clock: Callable[[], float] = time.monotonic,
                 front_end: Callable[[Settings], FrontEnd] | None = None) -> None:
        self.settings = settings
        self._load_embedder = load_embedder
        self._notifier = notifier or SystemdNotifier()
        self._clock = clock
        self.inbox = Inbox()
        self._registry = ModelRegistry(settings.paths.models_dir)
        self._publisher = StatusPublisher(settings.paths.models_dir, clock)
        self.events = EventLog()
        self.metrics = DaemonMetrics(self.snapshot)
        self._retraining = Retraining(settings, self._registry, self.inbox, self.events, self.metrics)
        self._signals = SignalsToInbox(self.inbox)
        self._make_front_end = front_end
        self._http: FrontEnd | None = None
        self.predictions = PredictionWorker()
        self._runtime: str | None = None
        self._log_feed = EventLogHandler(self.events)
        self._states = StateChanges(self._notifier, self.events, self._write_status)
        self.stopped = False
        self._started_wall = time.time()
        self.store: Database | None = None
        self._reports: CacheReports | None = None
        self._indexer: Indexer | None = None
        self.recordings: Recordings | None = None
        self.review: ReviewQueue | None = None
        self._alerts = Alerts(settings.alerts, self.events, self.metrics, settings.training.priority_class)
        self._watcher: SupervisedWatcher | None = None
        self._schedule = ScheduledRetrains(lambda: self.inbox.put(RetrainRequested("schedule")))
        self._next_watchdog = 0.0
        self._storage = StorageTrouble(settings.paths.models_dir, clock)

    # --- producers: they only enqueue ---------------------------------------------------

    @property
    def state(self) -> DaemonState:
        return self._states.current

    def install_signal_handlers(self) -> None:
        self._signals.install()

    def snapshot(self) -> dict[str, Any]:
        """The latest published status document (read by the HTTP server's thread)."""
        return self._publisher.latest

    def post(self, message: Message) -> None:
        self.inbox.put(message)

    def reserve_prediction(self) -> bool:
        """A place in the prediction queue for an upload about to be read; False when full."""
        return self.predictions.reserve()

    def release_prediction(self) -> None:
        self.predictions.release()

    def predict(self, upload: IO[bytes]) -> Future[dict[str, Any]]:
        """Label an upload (holding a reserved place) off the loop."""
        return self.predictions.submit(upload)

    def request_stop(self, reason: str = "requested") -> None:
        self.inbox.put(Stop(reason))

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        logger.info("starting (pid %d) with %s", os.getpid(), settings.describe())
        pause.warn_if_armed(logger)
        logging.getLogger("ecosight_daemon").addHandler(self._log_feed)
        self._registry.ensure()
        self._write_status()
        if settings.http.enabled and self._make_front_end is not None:
            self._http = self._make_front_end(settings)  # the token and the port checked before the slow part
        recover_at_start(self._registry)
        parts = open_parts(settings, self._registry, self._load_embedder, self._alerts, self._clock, self.metrics)
        self.store, self._reports, self._indexer = parts.store, parts.reports, parts.indexer
        self.review, self.recordings, self._runtime = parts.review, parts.recordings, parts.runtime
        self.predictions.ready(self._registry, parts.embedder, IngestLimits.from_settings(settings))
        self._watcher = SupervisedWatcher(settings.paths.audio_dir, self.inbox.put_file_event,
                                          settings.watch.polling, settings.watch.poll_interval_s, self._clock)
        self._watcher.start()
        self._schedule.apply(settings.triggers.schedule)
        self._retraining.start_up(settings)
        if self._http is not None:
            self._http.start(self, self.events, self.metrics)
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
        if self._indexer.more_to_embed or (self.recordings is not None and self.recordings.more_work):
            timeout = 0.0
        elif len(self._indexer.tracker):
            timeout = min(timeout, SETTLE_POLL_S)
        for message in self.inbox.drain(timeout):
            try:
                self._handle(message)
            except STORAGE_ERRORS as exc:
                self._storage_failed(exc)
            except Exception:  # one message, whatever it carried, never ends the loop
                logger.exception("handling %s failed; the daemon carries on", type(message).__name__)
        if self.state is DaemonState.STOPPING:
            self._shutdown()
            return
        if self._storage.waiting():
            self._keep_alive(self._clock())
            return
        try:
            self._housekeeping(self._indexer)
        except STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return
        if (over := self._storage.recovered()) is not None:
            logger.warning("writing works again (after: %s); rescanning %s for anything missed",
                           over, self.settings.paths.audio_dir)
            self.inbox.put(Rescan("after a storage error"))
            finish_interrupted_promotion(self._registry)

    def _storage_failed(self, exc: Exception) -> None:
        self._storage.failed(exc)
        self._write_status()

    def _handle(self, message: Message) -> None:
        assert self._indexer is not None
        if isinstance(message, Stop):
            logger.info("stopping (%s)", message.reason)
            self._states.set(DaemonState.STOPPING)
        elif isinstance(message, RetrainFinished):
            self._retraining.finished(message, self.settings, stopping=self.state is DaemonState.STOPPING)
        elif self.state is DaemonState.STOPPING:
            return  # no new work once stopping
        elif isinstance(message, FileChanged):
            if self._indexer.file_event(message.event):
                self._retraining.corpus_changed()
        elif isinstance(message, Rescan):
            self._rescan(message.reason)
        elif isinstance(message, RetrainRequested):
            self._retraining.request(message.reason)
        elif isinstance(message, ReloadConfig):
            self._reload_config()
            self._retraining.request("SIGHUP")
        elif isinstance(message, Rollback):
            answer_rollback(message, self._registry)
        elif isinstance(message, ReviewDecision):
            answer_review(message, self.review, self._write_status)

    # --- housekeeping -----------------------------------------------------------------------

    def _housekeeping(self, indexer: Indexer) -> None:
        assert self.store is not None
        now = self._clock()
        if indexer.refresh_settled(now):
            self._retraining.corpus_changed()
        why = indexer.rescan_due(now, self._watcher is not None and self._watcher.check(now))
        if why is not None:
            self._rescan(why)
        if indexer.embed_batch(starting=lambda: self._states.set_busy(DaemonState.EMBEDDING),
                               wake=lambda: not self.inbox.empty()):
            self._retraining.corpus_changed()
        if self.recordings is not None:
            self.recordings.step(now)
        self._retraining.check(now, self.settings, self.store, embedding_burst=indexer.busy(), review=self.review)
        if self._retraining.running:
            self._states.set(DaemonState.TRAINING)
        elif self.state is not DaemonState.IDLE and not indexer.pending():
            self._states.set(DaemonState.IDLE)
        self._keep_alive(now)

    def _rescan(self, why: str) -> None:
        assert self._indexer is not None
        self._states.set_busy(DaemonState.RECONCILING)
        if self._indexer.rescan(why):
            self._retraining.corpus_changed()

    def _keep_alive(self, now: float) -> None:
        if self._publisher.due(now):
            self._write_status()
        if self._notifier.watchdog_interval_s and now >= self._next_watchdog:
            # Only a turning loop with a working watcher (or its rescans) reaches here
            # healthy; a stuck loop never pings, so systemd restarts it.
            self._notifier.watchdog()
            self._next_watchdog = now + self._notifier.watchdog_interval_s

    def _reload_config(self) -> None:
        fresh = reload_settings(self.settings)
        if fresh is not None:
            self.settings = fresh
            self._retraining.policy.settings = fresh.triggers
            self._schedule.apply(fresh.triggers.schedule)

    # --- status and shutdown ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return build_status(StatusInputs(
            state=self.state, settings=self.settings, started_wall=self._started_wall, reports=self._reports,
            registry=self._registry, inbox=self.inbox, indexer=self._indexer, policy=self._retraining.policy,
            retrain_running=self._retraining.running, last_retrain=self._retraining.last_entry, schedule=self._schedule,
            watcher=self._watcher, storage_error=self._storage.error, embedding_runtime=self._runtime,
            http_url=self._http.url if self._http else None, recordings=self.recordings, review=self.review,
        ))

    def _write_status(self) -> None:
        try:
            status = self.status()
        except OSError as exc:  # out of descriptors, say: the last document stays; the next turn tries again
            self._storage.failed(exc)
            return
        self._publisher.publish(status)

    def _shutdown(self) -> None:
        self._notifier.stopping()
        if self._http is not None:
            self._http.stop()
        self._retraining.stop()
        self.predictions.close()
        self._alerts.close()
        if self._watcher is not None:
            self._watcher.stop()
        for part in (self._indexer, self.recordings):  # their reader processes stopped
            if part is not None:
                part.close()
        self._schedule.stop()
        self._states.set(DaemonState.STOPPED)
        if self.store is not None:
            self.store.close()
            self.store, self._reports = None, None
        self.stopped = True
        logger.info("stopped")
        logging.getLogger("ecosight_daemon").removeHandler(self._log_feed)
