"""The daemon's file side: keeps the cache in step with audio_dir.

Settled files are refreshed one by one, rescans replace what events cannot tell
(folders moved, a restarted watcher, the periodic check), and pending files are
embedded in small batches so the loop answers signals between them. Every method
returns whether the indexed corpus changed; the loop passes that to the trigger policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.daemon.watcher import FileEvent, SettleTracker
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.ingest.daemon_stream import EmbedStream
from ecosight_daemon.ingest.file_steps import EmbedReport
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.reconcile import reconcile, refresh_path
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.progress import ProgressReporter

logger = logging.getLogger(__name__)

# One batch embeds files for about EMBED_BATCH_S (at most EMBED_BATCH files), so signals
# and status are answered within about a second while the per-batch bookkeeping (queries
# whose cost grows with the index) is spread over many files.
EMBED_BATCH = 64
EMBED_BATCH_S = 1.0
FOLDER_RESCAN_DELAY_S = 1.0  # folder events within this long share one rescan


class Indexer:
    def __init__(self, settings: Settings, store: Database, embedder: Embedder,
                 clock: Callable[[], float], metrics: DaemonMetrics | None = None) -> None:
        self._audio_dir = settings.paths.audio_dir
        self._rescan_interval_s = settings.watch.reconcile_interval_s
        self._limits = IngestLimits.from_settings(settings)
        self._store = store
        self._clock = clock
        self.tracker = SettleTracker(settings.watch.settle_s)
        self.rescans = 0
        self.more_to_embed = False
        self._next_rescan = 0.0
        self._folder_rescan_at: float | None = None
        self._progress: ProgressReporter | None = None
        self._burst_done = 0
        self._stream = EmbedStream(embedder, settings.paths.audio_dir, self._limits)
        self._metrics = metrics
        self.last_scan_at: float | None = None  # wall clock, for people and Prometheus
        self.last_embed_at: float | None = None

    def file_event(self, event: FileEvent) -> bool:
        if event.rescan:
            # A storm of folder events (thousands moved in at once) becomes one rescan
            # shortly after, not one rescan per folder.
            if self._folder_rescan_at is None:
                self._folder_rescan_at = self._clock() + FOLDER_RESCAN_DELAY_S
            return False
        if event.deleted:
            self.tracker.forget(Path(event.path))
            return refresh_path(self._store, self._audio_dir, Path(event.path), self._limits)
        self.tracker.changed(Path(event.path), self._clock(), ready=event.ready)
        return False

    def refresh_settled(self, now: float) -> bool:
        changed = False
        for path in self.tracker.due(now):
            changed |= refresh_path(self._store, self._audio_dir, path, self._limits)
        return changed

    def rescan_due(self, now: float, watcher_wants_rescan: bool) -> str | None:
        """Why a rescan should run now, or None."""
        if watcher_wants_rescan:
            return "file watcher restarted or replaced by rescans"
        if now >= self._next_rescan:
            return "periodic"
        if self._folder_rescan_at is not None and now >= self._folder_rescan_at:
            return "folders changed"
        return None

    def rescan(self, why: str) -> bool:
        self._folder_rescan_at = None
        self.rescans += 1
        report = reconcile(self._store, self._audio_dir, self._limits)
        self._next_rescan = self._clock() + self._rescan_interval_s
        self.last_scan_at = time.time()
        if report.new or report.changed or report.removed:
            logger.info("reconciled (%s): %d new, %d changed, %d removed, %d unchanged", why,
                        report.new, report.changed, report.removed, report.unchanged)
            return True
        return False

    @property
    def folder_rescan_scheduled(self) -> bool:
        return self._folder_rescan_at is not None

    def pending(self) -> int:
        return self._store.clips.count_files(FileState.PENDING)

    def busy(self) -> bool:
        """Files to embed or still settling: the middle of a burst."""
        return self.more_to_embed or len(self.tracker) > 0 or self.pending() > 0

    def embed_batch(self, starting: Callable[[], None], wake: Callable[[], bool] = lambda: False) -> bool:
        """Embed pending files for about EMBED_BATCH_S, or until `wake()` (files still
        running are written on a later turn); `starting` is called first if there are any."""
        pending = self.pending()
        self.more_to_embed = False
        if not pending and not self._stream.busy:
            self._progress, self._burst_done = None, 0
            self._stream.burst_over()
            return False
        starting()
        if self._progress is None:
            self._progress = ProgressReporter("embedded")
        report = self._stream.run(self._store, limit=EMBED_BATCH, time_budget_s=EMBED_BATCH_S, wake=wake)
        self._burst_done += report.embedded + report.failed + report.skipped + report.deferred
        self._count(report)
        self._progress(self._burst_done, self._burst_done + self.pending())
        handled = report.embedded + report.failed + report.skipped
        # Keep going without waiting on the inbox while files run or remain; but files
        # only still being written (deferred) are looked at again after the usual wait.
        self.more_to_embed = self._stream.busy or (handled > 0 and pending > handled)
        return handled > 0

    def close(self) -> None:
        """Stop embedding; files not yet written stay pending for the next start."""
        self._stream.close(self._store)

    def _count(self, report: EmbedReport) -> None:
        if report.embedded:
            self.last_embed_at = time.time()
        if self._metrics is not None:
            self._metrics.embeddings.inc(report.embedded)
            self._metrics.cache_hits.inc(report.skipped)
            self._metrics.failures.inc(report.failed)
            for seconds in report.embed_seconds:
                self._metrics.embed_seconds.observe(seconds)
