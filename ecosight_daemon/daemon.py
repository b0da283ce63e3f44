"""The daemon: one owner (the main thread), one inbox, named states.

Signal handlers, the watchdog handler and the APScheduler job only put small commands
on the inbox. The main thread owns the SQLite connection, the state and every decision:
`step()` waits on the inbox, merges what arrived, acts, then does housekeeping
(settled files, embedding in small batches, triggers, status, systemd watchdog).
A retrain runs on one worker thread (with its own database connection) that drives
the spawned training child, so the loop keeps answering while a model trains.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from . import pause
from .artifacts import ModelRegistry
from .config import Settings, load_settings
from .embedder import Embedder, remember_audioset_head
from .errors import ConfigError
from .features import needs_audioset_head, pool_clips
from .ingest import IngestLimits, embed_pending, reconcile, refresh_path
from .progress import ProgressReporter
from .retrain import RetrainBusy, RetrainOutcome, retrain, retrain_lock, trained_hashes
from .scheduling import RetrainRequests, RetrainSchedule
from .status import HEARTBEAT_S, DaemonState, write_status
from .store import EmbeddingStore, FileState
from .systemd import SystemdNotifier
from .training_child import TrainingChild
from .watcher import FileEvent, SettleTracker, SupervisedWatcher

logger = logging.getLogger(__name__)

# One loop iteration embeds files for about EMBED_BATCH_S (at most EMBED_BATCH files), so
# signals and status are answered within about a second while the per-batch bookkeeping
# (queries whose cost grows with the index) is spread over many files.
EMBED_BATCH = 64
EMBED_BATCH_S = 1.0
# While a burst is being embedded, the new-sample count (a query over the whole index) is
# refreshed at most this often; it is always refreshed when the burst ends.
TRIGGER_CHECK_S = 5.0
# File events waiting in the inbox at most; past it they are dropped and one rescan of
# audio_dir replaces them, so a burst of any size costs bounded memory.
FILE_EVENT_LIMIT = 10_000
SETTLE_POLL_S = 0.1  # how often files waiting to settle are looked at
FOLDER_RESCAN_DELAY_S = 1.0  # folder events within this long share one rescan
STORAGE_RETRY_S = 5.0  # pause after a failed write (disk full, I/O error) before trying again
DRIFT_CHECK_INTERVAL_S = 60.0
JOIN_TIMEOUT_S = 5.0


class Kind(str, Enum):
    FILE = "file"
    RECONCILE = "reconcile"
    RETRAIN = "retrain"
    RELOAD = "reload"
    STOP = "stop"
    RETRAIN_DONE = "retrain-done"


@dataclass(frozen=True)
class Command:
    kind: Kind
    reason: str = ""
    event: FileEvent | None = None


def model_metrics(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The current model's test figures with sample sizes and 95% intervals."""
    if not metadata:
        return None
    summary = {key: metadata.get(key) for key in ("accuracy", "macro_f1", "priority_recall")}
    return {**summary, **(metadata.get("test_metrics") or {})}


class Daemon:
    def __init__(
        self,
        settings: Settings,
        load_embedder: Callable[[str], Embedder],
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._load_embedder = load_embedder
        self._notifier = notifier or SystemdNotifier()
        self._clock = clock
        self._inbox: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._registry = ModelRegistry(settings.paths.models_dir)
        self._tracker = SettleTracker(settings.watch.settle_s)
        self._requests = RetrainRequests()
        self._retrain_stop = threading.Event()
        self._retrain_thread: threading.Thread | None = None
        self._retrain_outcome: RetrainOutcome | None = None
        self._warm_child: TrainingChild | None = None
        self._last_retrain: dict[str, Any] | None = None
        self._baseline: set[str] = set()
        self._stop_signals = 0
        self.state = DaemonState.STARTING
        self.stopped = False
        self._started_wall = time.time()
        self._store: EmbeddingStore | None = None
        self._embedder: Embedder | None = None
        self._watcher: SupervisedWatcher | None = None
        self._schedule: RetrainSchedule | None = None
        self._next_reconcile = 0.0
        self._folder_rescan_at: float | None = None
        self._rescans = 0
        self._next_heartbeat = 0.0
        self._next_watchdog = 0.0
        self._new_samples = 0
        self._corpus_changed = True
        self._next_trigger_check = 0.0
        self._drift_checked_at = -DRIFT_CHECK_INTERVAL_S
        self._drift_checked_count = 0
        self._progress: ProgressReporter | None = None
        self._burst_done = 0
        self._file_events = 0  # FILE commands in the inbox
        self._file_events_peak = 0
        self._file_events_lock = threading.Lock()
        self._overflowed = False
        self._more_to_embed = False
        self._storage_error: str | None = None
        self._status_error: str | None = None
        self._storage_retry_at = 0.0

    # --- inbox producers: they only enqueue --------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only queue: logging or touching SQLite here could deadlock on a lock the
        # interrupted main thread holds. A second stop signal exits at once, which is
        # safe because every write is a transaction or an atomic replace.
        if signum == signal.SIGHUP:
            self._inbox.put(Command(Kind.RELOAD, "SIGHUP"))
            return
        self._stop_signals += 1
        if self._stop_signals > 1:
            os._exit(128 + signum)
        self._inbox.put(Command(Kind.STOP, signal.Signals(signum).name))

    def request_retrain(self, reason: str) -> None:
        self._inbox.put(Command(Kind.RETRAIN, reason))

    def request_stop(self, reason: str = "requested") -> None:
        self._inbox.put(Command(Kind.STOP, reason))

    def _on_file_event(self, event: FileEvent) -> None:
        with self._file_events_lock:
            if self._file_events >= FILE_EVENT_LIMIT:
                if not self._overflowed:
                    self._overflowed = True
                    self._inbox.put(Command(Kind.RECONCILE, f"more than {FILE_EVENT_LIMIT} file events queued"))
                return
            self._file_events += 1
            self._file_events_peak = max(self._file_events_peak, self._file_events)
        self._inbox.put(Command(Kind.FILE, event=event))

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        logger.info("starting (pid %d) with %s", os.getpid(), settings.describe())
        pause.warn_if_armed(logger)
        self._registry.ensure()
        self._write_status()
        recovered = None
        try:
            with retrain_lock(settings.paths.models_dir):  # never while a CLI retrain or rollback promotes
                recovered = self._registry.recover()
        except RetrainBusy:
            logger.info("a retrain holds %s; it finishes any promotion itself", settings.paths.models_dir)
        if recovered:
            logger.info("completed the interrupted promotion of %s", recovered)
        self._store = EmbeddingStore.open(settings.cache_path, settings.embedding.storage_dtype)
        self._embedder = self._load_embedder(settings.embedding.yamnet_handle)
        self._store.adopt_model(self._embedder.model_id, self._embedder.fingerprint)
        if needs_audioset_head(settings.training.pooling):
            remember_audioset_head(self._store, self._embedder)
        self._baseline = trained_hashes(self._registry)
        settings.paths.audio_dir.mkdir(parents=True, exist_ok=True)
        self._watcher = SupervisedWatcher(settings.paths.audio_dir, self._on_file_event, settings.watch.polling,
                                          settings.watch.poll_interval_s, self._clock)
        self._watcher.start()
        self._start_schedule()
        self._warm_up_training()
        self._notifier.ready("reconciling")
        self._inbox.put(Command(Kind.RECONCILE, "startup"))

    def run(self) -> int:
        self.start()
        while not self.stopped:
            self.step(timeout=0.5)
        return 0

    def run_until_idle(self, deadline_s: float) -> None:
        """Step until nothing is pending, settling or training (for tests and one-shot runs)."""
        end = self._clock() + deadline_s
        while self._clock() < end and not self.stopped:
            self.step(timeout=0.1)
            if self.state is DaemonState.IDLE and not len(self._tracker) and self._inbox.empty():
                return

    def step(self, timeout: float) -> None:
        """Handle one inbox batch, then housekeeping. Waits up to `timeout` for the inbox
        only when there is nothing to embed and nothing settling."""
        if self._more_to_embed:
            timeout = 0.0
        elif len(self._tracker):
            timeout = min(timeout, SETTLE_POLL_S)
        for command in self._drain(timeout):
            try:
                self._dispatch(command)
            except (sqlite3.OperationalError, OSError) as exc:
                self._storage_failed(exc)
        if self.state is DaemonState.STOPPING:
            self._shutdown()
            return
        if self._clock() < self._storage_retry_at:
            self._keep_alive(self._clock())
            return
        try:
            self._housekeeping()
        except (sqlite3.OperationalError, OSError) as exc:
            self._storage_failed(exc)
            return
        if self._storage_error is not None:
            logger.warning("writing works again (after: %s); rescanning %s for anything missed",
                           self._storage_error, self.settings.paths.audio_dir)
            self._storage_error = None
            self._inbox.put(Command(Kind.RECONCILE, "after a storage error"))
            self._finish_interrupted_promotion()

    def _storage_failed(self, exc: Exception) -> None:
        """A write failed (disk full, read-only, I/O error): keep running, retry later.

        Each write is one transaction or an atomic replace, so a failed one leaves the
        previous state; what it would have recorded is found again by the rescan that
        follows recovery.
        """
        message = f"{type(exc).__name__}: {exc}"
        if message != self._storage_error:
            logger.error("cannot write under %s (%s); retrying every %.0f s", self.settings.paths.models_dir,
                         message, STORAGE_RETRY_S)
        self._storage_error = message
        self._storage_retry_at = self._clock() + STORAGE_RETRY_S
        self._write_status()

    def _drain(self, timeout: float) -> list[Command]:
        try:
            commands = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                commands.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        files = sum(1 for c in commands if c.kind is Kind.FILE)
        with self._file_events_lock:
            self._file_events -= files
            if any(c.kind is Kind.RECONCILE for c in commands):
                self._overflowed = False
        return commands

    def _dispatch(self, command: Command) -> None:
        if command.kind is Kind.STOP:
            logger.info("stopping (%s)", command.reason)
            self._set_state(DaemonState.STOPPING)
        elif self.state is DaemonState.STOPPING:
            return  # no new work once stopping
        elif command.kind is Kind.FILE and command.event is not None:
            self._on_path_changed(command.event)
        elif command.kind is Kind.RECONCILE:
            self._reconcile(command.reason)
        elif command.kind is Kind.RETRAIN:
            self._add_request(command.reason)
        elif command.kind is Kind.RELOAD:
            self._reload_config()
            self._add_request("SIGHUP")
        elif command.kind is Kind.RETRAIN_DONE:
            self._collect_retrain()

    def _on_path_changed(self, event: FileEvent) -> None:
        if event.rescan:
            # A storm of folder events (thousands moved in at once) becomes one rescan
            # shortly after, not one rescan per folder.
            if self._folder_rescan_at is None:
                self._folder_rescan_at = self._clock() + FOLDER_RESCAN_DELAY_S
        elif event.deleted:
            self._tracker.forget(Path(event.path))
            assert self._store is not None
            if refresh_path(self._store, self.settings.paths.audio_dir, Path(event.path), self._limits()):
                self._corpus_changed = True
        else:
            self._tracker.changed(Path(event.path), self._clock(), ready=event.ready)

    # --- housekeeping -----------------------------------------------------------------------

    def _housekeeping(self) -> None:
        assert self._store is not None
        now = self._clock()
        for path in self._tracker.due(now):
            if refresh_path(self._store, self.settings.paths.audio_dir, path, self._limits()):
                self._corpus_changed = True
        watcher_wants_rescan = self._watcher is not None and self._watcher.check(now)
        if now >= self._next_reconcile or watcher_wants_rescan:
            self._reconcile("file watcher restarted or replaced by rescans" if watcher_wants_rescan else "periodic")
        elif self._folder_rescan_at is not None and now >= self._folder_rescan_at:
            self._reconcile("folders changed")
        self._embed_some()
        if self._corpus_changed and (not self._more_to_embed or now >= self._next_trigger_check):
            self._corpus_changed = False
            self._next_trigger_check = now + TRIGGER_CHECK_S
            self._check_triggers(now)
        if self._requests.pending() and self._retrain_thread is None:
            self._start_retrain(self._requests.take())
        self._settle_state()
        self._keep_alive(now)

    def _keep_alive(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._write_status()
        if self._notifier.watchdog_interval_s and now >= self._next_watchdog:
            # Only a turning loop with a working watcher (or its rescans) reaches here
            # healthy; a stuck loop never pings, so systemd restarts it.
            self._notifier.watchdog()
            self._next_watchdog = now + self._notifier.watchdog_interval_s

    def _limits(self) -> IngestLimits:
        return IngestLimits.from_settings(self.settings)

    def _reconcile(self, why: str) -> None:
        assert self._store is not None
        if self.state is not DaemonState.TRAINING:
            self._set_state(DaemonState.RECONCILING)
        self._folder_rescan_at = None
        self._rescans += 1
        report = reconcile(self._store, self.settings.paths.audio_dir, self._limits())
        self._next_reconcile = self._clock() + self.settings.watch.reconcile_interval_s
        if report.new or report.changed or report.removed:
            logger.info("reconciled (%s): %d new, %d changed, %d removed, %d unchanged", why,
                        report.new, report.changed, report.removed, report.unchanged)
            self._corpus_changed = True

    def _embed_some(self) -> None:
        assert self._store is not None and self._embedder is not None
        pending = self._store.count_files(FileState.PENDING)
        self._more_to_embed = False
        if not pending:
            self._progress, self._burst_done = None, 0
            return
        if self.state is not DaemonState.TRAINING:
            self._set_state(DaemonState.EMBEDDING)
        if self._progress is None:
            self._progress = ProgressReporter("embedded")
        report = embed_pending(self._store, self._embedder, self.settings.paths.audio_dir, self._limits(),
                               limit=EMBED_BATCH, time_budget_s=EMBED_BATCH_S)
        self._burst_done += report.embedded + report.failed + report.skipped + report.deferred
        self._progress(self._burst_done, self._burst_done + self._store.count_files(FileState.PENDING))
        if report.embedded or report.skipped or report.failed:
            self._corpus_changed = True
        handled = report.embedded + report.failed + report.skipped
        # Keep going without waiting on the inbox while files remain; but files that are
        # only still being written (deferred) are looked at again after the usual wait.
        self._more_to_embed = handled > 0 and pending > handled

    def _settle_state(self) -> None:
        if self._retrain_thread is not None:
            self._set_state(DaemonState.TRAINING)
        elif self.state in (DaemonState.STARTING, DaemonState.RECONCILING, DaemonState.EMBEDDING,
                            DaemonState.TRAINING):
            assert self._store is not None
            if not self._store.count_files(FileState.PENDING):
                self._set_state(DaemonState.IDLE)

    def _set_state(self, state: DaemonState) -> None:
        if state is self.state:
            return
        logger.info("state: %s -> %s", self.state.value, state.value)
        self.state = state
        self._notifier.status(state.value)
        self._write_status()

    # --- triggers -------------------------------------------------------------------------

    def _add_request(self, reason: str) -> None:
        if self._retrain_thread is not None:
            logger.info("retrain requested (%s) while one runs; it will run once afterwards", reason)
        else:
            logger.info("retrain requested: %s", reason)
        self._requests.add(reason)

    def _check_triggers(self, now: float) -> None:
        assert self._store is not None
        new = self._store.training_hashes() - self._baseline
        self._new_samples = len(new)
        threshold = self.settings.triggers.min_new_samples
        if self._new_samples >= threshold and not self._requests.pending() and self._retrain_thread is None:
            self._add_request(f"threshold: {self._new_samples} new samples >= {threshold}")
        self._maybe_check_drift(now, new)

    def _maybe_check_drift(self, now: float, new: set[str]) -> None:
        floor = self.settings.triggers.drift_min_accuracy
        if (floor <= 0 or len(new) < self.settings.triggers.drift_min_samples or self._retrain_thread
                or len(new) == self._drift_checked_count or now - self._drift_checked_at < DRIFT_CHECK_INTERVAL_S):
            return
        self._drift_checked_at, self._drift_checked_count = now, len(new)
        accuracy = self._accuracy_on(new)
        if accuracy is not None and accuracy < floor:
            self._add_request(f"drift: accuracy {accuracy:.3f} < {floor:.3f} on {len(new)} new samples")

    def _accuracy_on(self, hashes: set[str]) -> float | None:
        """The current model's accuracy on the given clips (classes it never learned count as misses)."""
        import numpy as np

        from .evaluation import apply_priority_threshold
        from .training import load_classifier, predict_probabilities

        metadata, path = self._registry.current_metadata(), self._registry.current_model_path()
        if metadata is None or path is None or metadata.get("embedding_model_id") != self._embedder.model_id:  # type: ignore[union-attr]
            return None
        assert self._store is not None
        labels = {r.sha256: r.label for r in self._store.files(FileState.EMBEDDED) if r.sha256 in hashes}
        head = self._store.audioset_head() if needs_audioset_head(metadata["pooling"]) else None
        features = pool_clips([self._store.embeddings_for(h) for h in labels], metadata["pooling"], head)  # type: ignore[misc]
        classes = metadata["classes"]
        priority = classes.index(metadata["priority_class"]) if metadata.get("priority_class") in classes else None
        probabilities = predict_probabilities(load_classifier(path), features)
        predicted = apply_priority_threshold(probabilities, priority, metadata.get("priority_threshold"))
        return float(np.mean([classes[p] == label for p, label in zip(predicted, labels.values())]))

    def _start_schedule(self) -> None:
        expression = self.settings.triggers.schedule
        if expression.strip():
            self._schedule = RetrainSchedule(expression, lambda: self.request_retrain("schedule"))
            self._schedule.start()
            logger.info("scheduled retrains: %s (next %s)", expression, self._schedule.next_run())

    def _reload_config(self) -> None:
        source = self.settings.source
        if source is None:
            return
        try:
            fresh = load_settings(source)
        except ConfigError as exc:
            logger.error("SIGHUP: %s; keeping the running configuration", exc)
            return
        kept = [name for name in ("paths", "embedding", "audio", "watch")
                if getattr(fresh, name) != getattr(self.settings, name)]
        if kept:
            logger.warning("SIGHUP: changes to [%s] take effect after a restart", "], [".join(kept))
            fresh = dataclasses.replace(fresh, **{name: getattr(self.settings, name) for name in kept})
        if fresh.triggers.schedule != self.settings.triggers.schedule and self._schedule is not None:
            self._schedule.stop()
            self._schedule = None
        schedule_changed = fresh.triggers.schedule != self.settings.triggers.schedule
        self.settings = fresh
        if schedule_changed:
            self._start_schedule()
        logger.info("SIGHUP: configuration reloaded from %s", source)

    # --- retraining -------------------------------------------------------------------------

    def _start_retrain(self, reason: str) -> None:
        assert self._store is not None
        self._baseline = self._store.training_hashes()
        self._new_samples = 0
        self._retrain_outcome = None
        child, self._warm_child = self._warm_child, None
        self._retrain_thread = threading.Thread(
            target=self._retrain_worker, args=(self.settings, reason, child), name="ecosight-retrain", daemon=True
        )
        self._set_state(DaemonState.TRAINING)
        logger.info("retraining (%s)", reason)
        self._retrain_thread.start()

    def _warm_up_training(self) -> None:
        if self.settings.training.keep_warm and self._warm_child is None:
            self._warm_child = TrainingChild(self._log_level())

    def _log_level(self) -> str:
        return logging.getLevelName(logging.getLogger().level)

    def _retrain_worker(self, settings: Settings, reason: str, child: TrainingChild | None) -> None:
        store = EmbeddingStore.open(settings.cache_path, settings.embedding.storage_dtype)
        try:
            self._retrain_outcome = retrain(settings, store, reason, should_stop=self._retrain_stop.is_set,
                                            log_level=self._log_level(), child=child)
        except Exception as exc:  # never let a retrain error take the daemon down
            logger.exception("retrain (%s) failed", reason)
            self._retrain_outcome = RetrainOutcome(None, False, f"{type(exc).__name__}: {exc}", reason)
        finally:
            store.close()
            self._inbox.put(Command(Kind.RETRAIN_DONE))

    def _collect_retrain(self) -> None:
        if self._retrain_thread is None:
            return
        self._retrain_thread.join(timeout=JOIN_TIMEOUT_S)
        self._retrain_thread = None
        outcome = self._retrain_outcome
        if outcome is not None:
            self._last_retrain = outcome.log_entry()
        self._corpus_changed = True  # files that arrived meanwhile may reach the threshold
        self._finish_interrupted_promotion()
        if self.state is not DaemonState.STOPPING:
            self._warm_up_training()

    def _finish_interrupted_promotion(self) -> None:
        """A promotion that failed part-way (disk full) is finished as soon as it can be."""
        if not self._registry.promotion_pending():
            return
        try:
            with retrain_lock(self.settings.paths.models_dir):
                self._registry.recover()
        except (RetrainBusy, OSError) as exc:
            logger.error("an interrupted promotion is still to be finished (%s); will retry", exc)

    # --- status and shutdown ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        counts = self._store.class_counts() if self._store is not None else {}
        metadata = self._registry.current_metadata() or {}
        pending = sum(c.pending for c in counts.values())
        failed = sum(c.failed for c in counts.values())
        next_run = self._schedule.next_run() if self._schedule is not None else None
        return {
            "state": self.state.value,
            "pid": os.getpid(),
            "started_at": self._started_wall,
            "uptime_s": round(time.time() - self._started_wall, 1),
            "audio_dir": str(self.settings.paths.audio_dir),
            "models_dir": str(self.settings.paths.models_dir),
            "classes": {label or "(no class)": c.as_dict() for label, c in counts.items()},
            "pending": pending,
            "failed": failed,
            "settling": len(self._tracker),
            "queued_file_events": self._file_events,
            "queued_file_events_peak": self._file_events_peak,
            "queued_file_events_limit": FILE_EVENT_LIMIT,
            "storage_error": self._storage_error,
            "new_samples": self._new_samples,
            "min_new_samples": self.settings.triggers.min_new_samples,
            "retrain_running": self._retrain_thread is not None,
            "retrain_queued": list(self._requests.reasons),
            "next_scheduled_run": next_run.isoformat() if next_run else None,
            "model_version": metadata.get("version"),
            "model_metrics": model_metrics(metadata),
            "last_retrain": self._last_retrain or (self._registry.retraining_log() or [None])[-1],
            "heartbeat_s": HEARTBEAT_S,
            "rescans": self._rescans,
            "watcher": None if self._watcher is None else self._watcher.mode,
            "watcher_problem": None if self._watcher is None else self._watcher.problem,
        }

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
        self._retrain_stop.set()
        if self._retrain_thread is not None:
            logger.info("stopping the training run")
            self._retrain_thread.join(timeout=25)
            self._collect_retrain()
        if self._warm_child is not None:
            self._warm_child.close()
            self._warm_child = None
        if self._watcher is not None:
            self._watcher.stop(JOIN_TIMEOUT_S)
        if self._schedule is not None:
            self._schedule.stop()
        self.state = DaemonState.STOPPED
        self._write_status()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.stopped = True
        logger.info("stopped")
