"""The daemon's parts that need the database and YAMNet, opened in order at start: the
database, the embedder (its identity adopted, the AudioSet layer remembered when pooling
needs it), the indexer, the review queue (an interrupted export finished) and, when a
recordings folder is configured, the recordings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.alerts import Alerts
from ecosight_daemon.daemon.indexer import Indexer
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.daemon.recordings import Recordings
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.ingest.audioset_layer import remember_audioset_head
from ecosight_daemon.pooling import needs_audioset_head
from ecosight_daemon.review.queue import ReviewQueue, class_folders
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.reports import CacheReports
from ecosight_daemon.versions.registry import ModelRegistry


@dataclass(frozen=True)
class DaemonParts:
    store: Database
    reports: CacheReports
    embedder: Embedder
    runtime: str
    indexer: Indexer
    review: ReviewQueue
    recordings: Recordings | None


def open_parts(settings: Settings, registry: ModelRegistry, load_embedder: Callable[[str], Embedder], alerts: Alerts,
               clock: Callable[[], float], metrics: DaemonMetrics) -> DaemonParts:
    store = Database.open(settings.cache_path, settings.embedding.storage_dtype)
    try:
        embedder = load_embedder(settings.embedding.yamnet_handle)
        store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
        if needs_audioset_head(settings.training.pooling):
            remember_audioset_head(store, embedder)
        settings.paths.audio_dir.mkdir(parents=True, exist_ok=True)
        indexer = Indexer(settings, store, embedder, clock, metrics)
        review = ReviewQueue(settings, store.review, lambda: class_folders(settings.paths.audio_dir))
        review.recover()
        recordings = (Recordings(settings, store, embedder, registry, alerts, clock, review)
                      if settings.detection.recordings_dir != Path("") else None)
    except BaseException:
        store.close()  # a start that fails leaves the database closed
        raise
    return DaemonParts(store, CacheReports(store), embedder, getattr(embedder, "runtime", "tensorflow"), indexer,
                       review, recordings)
