"""Classify audio with the current model, its priority threshold applied: files for
`ecosight-daemon predict`, uploaded bytes for the running daemon's `POST /predict`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.published_model import PublishedModel
from ecosight_daemon.audio import DecodedAudio, decode_audio
from ecosight_daemon.config import Settings
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError, EcosightError
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.pooling import needs_audioset_head, pool_patches
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retrain_lock import recover_at_start

logger = logging.getLogger(__name__)


class Predictor:
    """YAMNet (already loaded) and the published model, reloaded when the current version changes."""

    def __init__(self, registry: ModelRegistry, embedder: Embedder, limits: IngestLimits,
                 decode: Callable[[bytes], DecodedAudio] | None = None) -> None:
        """`decode`: the daemon's decoder in a process of its own; without it, decoded here."""
        self._registry = registry
        self._embedder = embedder
        self._limits = limits
        self._decode = decode
        self._model: PublishedModel | None = None

    def current_model(self) -> PublishedModel:
        version = self._registry.current_version()
        if self._model is None or self._model.version != version:
            self._model = self._registry.current_model()
            if self._model is not None and self._embedder.model_id != self._model.embedding_model_id:
                logger.warning("model %s was trained on embeddings of %s but YAMNet here is %s; results may be off",
                               self._model.version, self._model.embedding_model_id, self._embedder.model_id)
        if self._model is None:
            raise EcosightError(f"no trained model in {self._registry.root}; run `ecosight-daemon retrain` first")
        return self._model

    def label(self, data: bytes) -> dict[str, Any]:
        """Label, probabilities and model version for one clip's bytes; AudioDecodeError says why not."""
        model = self.current_model()
        limits = self._limits
        if self._decode is not None:
            audio = self._decode(data)
        else:
            audio = decode_audio(data, limits.max_duration_s, limits.min_duration_s, limits.min_peak_dbfs)
        head = self._embedder.audioset_head() if needs_audioset_head(model.pooling) else None
        features = pool_patches(self._embedder.embed(audio.waveform), model.pooling, head)[np.newaxis, :]
        probabilities = model.probabilities(features)
        label = int(model.labels(features, probabilities)[0])
        return {
            "label": model.classes[label],
            "probabilities": {c: float(p) for c, p in zip(model.classes, probabilities[0], strict=True)},
            "model_version": model.version,
        }


def predict_files(settings: Settings, files: list[Path]) -> list[dict[str, Any]]:
    """One result per file: label, probabilities, model version; or an `error` entry."""
    from ecosight_daemon.embedding.loader import load_embedder

    registry = ModelRegistry(settings.paths.models_dir)
    recover_at_start(registry)
    if registry.current_version() is None:
        raise EcosightError(f"no trained model in {settings.paths.models_dir}; run `ecosight-daemon retrain` first")
    embedder = load_embedder(settings.embedding.yamnet_handle, settings.paths.models_dir, settings.embedding.runtime,
                             settings.embedding.yamnet_sha256)
    predictor = Predictor(registry, embedder, IngestLimits.from_settings(settings))
    version = predictor.current_model().version
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            results.append({"file": str(path), **predictor.label(path.read_bytes())})
        except (OSError, AudioDecodeError) as exc:
            reason = str(exc) if isinstance(exc, AudioDecodeError) else f"cannot read file ({exc.strerror or exc})"
            results.append({"file": str(path), "error": reason, "model_version": version})
    return results
