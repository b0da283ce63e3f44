"""Bring the cache up to date from the command line: reconcile audio_dir, then embed
what is pending, on this machine or on a Ray cluster (the daemon does the same itself,
in small batches; see indexer.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from ecosight_daemon.config import Settings
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.ingest.file_steps import EmbedReport
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.pooling import needs_audioset_head
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.util.progress import ProgressReporter

logger = logging.getLogger(__name__)


def require_audio_dir(settings: Settings) -> Path:
    audio_dir = settings.paths.audio_dir
    if not audio_dir.is_dir():
        raise EcosightError(
            f"audio folder {audio_dir} does not exist; create it with one sub-folder per class "
            "(for example gun_shot/) or set [paths] audio_dir in the config"
        )
    return audio_dir


def sync_cache(store: Database, settings: Settings, engine: str = "local",
               address: str | None = None) -> EmbedReport:
    """Reconcile the index with audio_dir and embed what is pending."""
    audio_dir = require_audio_dir(settings)
    limits = IngestLimits.from_settings(settings)
    adopt_model_without_loading(store, settings.embedding.yamnet_handle)
    reconcile(store, audio_dir, limits)
    if not store.clips.count_files(FileState.PENDING):
        return EmbedReport()  # nothing to do: do not pay for loading TensorFlow
    if engine == "ray":
        return embed_with_ray(store, settings, audio_dir, limits, address)
    return embed_with_model(store, settings, audio_dir, limits)


def adopt_model_without_loading(store: Database, handle: str) -> None:
    """Switch the cache to the configured model when its files are on disk, TF not needed."""
    from ecosight_daemon.embedding.identity import fingerprint_of, local_model_folder, model_id_for

    folder = local_model_folder(handle)
    if folder is not None:
        fingerprint = fingerprint_of(handle, folder)
        store.clips.adopt_model(model_id_for(fingerprint), fingerprint)


def embed_with_ray(
    store: Database, settings: Settings, audio_dir: Path, limits: IngestLimits, address: str | None
) -> EmbedReport:
    from ecosight_daemon.embedding.interface import YAMNET_DIM
    from ecosight_daemon.ingest.ray_engine import embed_pending_with_ray

    if store.clips.model_id is None:
        raise EcosightError(
            f"the Ray engine needs the YAMNet SavedModel on this machine too, to fingerprint it; "
            f"{settings.embedding.yamnet_handle!r} is not on disk here (set a local handle)"
        )
    if settings.embedding.runtime == "onnxruntime":  # made here once, not by every actor
        from ecosight_daemon.embedding.onnx_conversion import OnnxUnavailable, ensure_body

        try:
            ensure_body(settings.embedding.yamnet_handle, settings.paths.models_dir, store.clips.model_id)
        except OnnxUnavailable as exc:
            logger.warning("the Ray workers use TensorFlow: %s", exc)
    return embed_pending_with_ray(store, audio_dir, limits, settings.embedding.yamnet_handle, YAMNET_DIM, address,
                                  models_dir=settings.paths.models_dir, runtime=settings.embedding.runtime)


def embed_with_model(
    store: Database, settings: Settings, audio_dir: Path, limits: IngestLimits
) -> EmbedReport:
    from ecosight_daemon.embedding.loader import load_embedder
    from ecosight_daemon.ingest.audioset_layer import remember_audioset_head

    embedder = load_embedder(settings.embedding.yamnet_handle, settings.paths.models_dir, settings.embedding.runtime,
                             settings.embedding.yamnet_sha256)
    store.clips.adopt_model(embedder.model_id, embedder.fingerprint)
    if needs_audioset_head(settings.training.pooling):
        remember_audioset_head(store, embedder)  # spares retrain a second TensorFlow load
    return embed_pending(store, embedder, audio_dir, limits, progress=ProgressReporter("embedded"))
