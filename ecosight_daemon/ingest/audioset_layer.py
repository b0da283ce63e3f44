"""YAMNet's AudioSet layer kept in the cache with its model id, so pooling with AudioSet
scores (and retraining) needs no TensorFlow later."""

from __future__ import annotations

from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.store.database import Database


def remember_audioset_head(store: Database, embedder: Embedder) -> AudiosetHead:
    """Store YAMNet's AudioSet layer with its model id (once), so pooling needs no TensorFlow."""
    head = store.clips.audioset_head(embedder.model_id)
    if head is None:
        head = embedder.audioset_head()
        store.clips.save_audioset_head(embedder.model_id, head)
    return head
