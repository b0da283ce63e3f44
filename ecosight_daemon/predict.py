"""Classify audio files with the current model, its priority threshold applied."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import ModelRegistry
from .audio import decode_audio
from .config import Settings
from .errors import AudioDecodeError, EcosightError
from .features import needs_audioset_head, pool_patches
from .retrain import recover_at_start

logger = logging.getLogger(__name__)


def predict_files(settings: Settings, files: list[Path]) -> list[dict[str, Any]]:
    """One result per file: label, probabilities, model version; or an `error` entry."""
    from .embedder import YamnetEmbedder
    from .published_model import PublishedModel

    registry = ModelRegistry(settings.paths.models_dir)
    recover_at_start(registry)
    model = PublishedModel.current(registry)
    if model is None:
        raise EcosightError(
            f"no trained model in {settings.paths.models_dir}; run `ecosight-daemon retrain` first"
        )
    embedder = YamnetEmbedder.load(settings.embedding.yamnet_handle, settings.embedding.yamnet_sha256)
    if embedder.model_id != model.embedding_model_id:
        logger.warning("model %s was trained on embeddings of %s but YAMNet here is %s; results may be off",
                       model.version, model.embedding_model_id, embedder.model_id)
    head = embedder.audioset_head() if needs_audioset_head(model.pooling) else None
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            audio = decode_audio(path.read_bytes(), settings.audio.max_duration_s)
        except (OSError, AudioDecodeError) as exc:
            reason = str(exc) if isinstance(exc, AudioDecodeError) else f"cannot read file ({exc.strerror or exc})"
            results.append({"file": str(path), "error": reason, "model_version": model.version})
            continue
        features = pool_patches(embedder.embed(audio.waveform), model.pooling, head)[np.newaxis, :]
        probabilities = model.probabilities(features)
        label = int(model.labels(features, probabilities)[0])
        results.append({
            "file": str(path),
            "label": model.classes[label],
            "probabilities": {c: float(p) for c, p in zip(model.classes, probabilities[0], strict=True)},
            "model_version": model.version,
        })
    return results
