"""Classify audio files with the current model, its priority threshold applied."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import ModelRegistry
from .retrain import RetrainBusy, retrain_lock
from .audio import decode_audio
from .config import Settings
from .errors import AudioDecodeError, EcosightError
from .evaluation import apply_priority_threshold
from .features import needs_audioset_head, pool_patches

logger = logging.getLogger(__name__)


def predict_files(settings: Settings, files: list[Path]) -> list[dict[str, Any]]:
    """One result per file: label, probabilities, model version; or an `error` entry."""
    from .embedder import YamnetEmbedder
    from .training import load_classifier, predict_probabilities

    registry = ModelRegistry(settings.paths.models_dir)
    try:
        with retrain_lock(settings.paths.models_dir):
            registry.recover()
    except RetrainBusy:
        pass  # a retrain or rollback holds the lock and finishes any promotion itself
    metadata = registry.current_metadata()
    model_path = registry.current_model_path()
    if metadata is None or model_path is None:
        raise EcosightError(
            f"no trained model in {settings.paths.models_dir}; run `ecosight-daemon retrain` first"
        )
    classifier = load_classifier(model_path)
    embedder = YamnetEmbedder.load(settings.embedding.yamnet_handle, settings.embedding.yamnet_sha256)
    if embedder.model_id != metadata.get("embedding_model_id"):
        logger.warning("model %s was trained on embeddings of %s but YAMNet here is %s; results may be off",
                       metadata["version"], metadata.get("embedding_model_id"), embedder.model_id)
    head = embedder.audioset_head() if needs_audioset_head(metadata["pooling"]) else None
    classes: list[str] = metadata["classes"]
    priority = metadata.get("priority_class")
    priority_index = classes.index(priority) if priority in classes else None
    results = []
    for path in files:
        try:
            audio = decode_audio(path.read_bytes(), settings.audio.max_duration_s)
        except (OSError, AudioDecodeError) as exc:
            reason = str(exc) if isinstance(exc, AudioDecodeError) else f"cannot read file ({exc.strerror or exc})"
            results.append({"file": str(path), "error": reason, "model_version": metadata["version"]})
            continue
        features = pool_patches(embedder.embed(audio.waveform), metadata["pooling"], head)
        probabilities = predict_probabilities(classifier, features[np.newaxis, :])
        label = int(apply_priority_threshold(probabilities, priority_index, metadata.get("priority_threshold"))[0])
        results.append({
            "file": str(path),
            "label": classes[label],
            "probabilities": {c: float(p) for c, p in zip(classes, probabilities[0])},
            "model_version": metadata["version"],
        })
    return results
