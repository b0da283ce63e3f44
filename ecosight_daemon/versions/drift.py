"""The drift check: how well the current model labels samples that arrived since it was trained."""

from __future__ import annotations

from ecosight_daemon.pooling import needs_audioset_head, pool_clips
from ecosight_daemon.store.clip_index import ClipIndex, FileState
from ecosight_daemon.versions.registry import ModelRegistry


def current_model_accuracy(index: ClipIndex, registry: ModelRegistry, hashes: set[str],
                           embedding_model_id: str) -> float | None:
    """The current model's accuracy on the clips with these hashes; None without a
    comparable model (none yet, or one trained on another embedding model)."""

    metadata = registry.current_metadata()
    if metadata is None or metadata.get("embedding_model_id") != embedding_model_id:
        return None
    model = registry.current_model()
    if model is None:
        return None
    labels = {r.sha256: r.label for r in index.files(FileState.EMBEDDED) if r.sha256 in hashes}
    clips = [(embeddings, labels[h]) for h in labels if (embeddings := index.embeddings_for(h)) is not None]
    if not clips:
        return None
    head = index.audioset_head() if needs_audioset_head(model.pooling) else None
    features = pool_clips([embeddings for embeddings, _ in clips], model.pooling, head)
    return model.accuracy(features, [label for _, label in clips])
