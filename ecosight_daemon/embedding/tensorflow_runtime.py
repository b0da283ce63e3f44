"""YAMNet on TensorFlow (tensorflow_hub), behind the `Embedder` protocol: the reference runtime."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.embedding.frontend import PATCH_HOP_SAMPLES, PATCH_SAMPLES, patch_count
from ecosight_daemon.embedding.identity import identify
from ecosight_daemon.embedding.interface import AUDIOSET_CLASSES, YAMNET_DIM
from ecosight_daemon.embedding.tf_start_up import start_up_notes_hidden
from ecosight_daemon.errors import ModelLoadError
from ecosight_daemon.pooling import AudiosetHead

logger = logging.getLogger(__name__)

CHUNK_PATCHES = 128  # patches per YAMNet call (~1 minute of audio, ~0.1 GiB of TensorFlow memory)


@dataclass
class YamnetEmbedder:
    """YAMNet loaded with tensorflow_hub from a URL or a local SavedModel folder."""

    handle: str
    model_id: str
    fingerprint: dict[str, Any]
    _model: Any
    sample_rate: int = TARGET_SAMPLE_RATE
    dim: int = YAMNET_DIM

    @classmethod
    def load(cls, handle: str, pinned_sha256: str = "") -> YamnetEmbedder:
        """Load the model; raise ModelLoadError with what to do when it fails, or when
        `pinned_sha256` is set and the SavedModel's digest differs."""
        try:
            with start_up_notes_hidden():
                import tensorflow_hub as hub
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot import tensorflow_hub ({exc}); run `make install` "
                "(tensorflow-hub needs setuptools<82 for pkg_resources)"
            ) from exc
        try:
            folder = Path(hub.resolve(handle))
            with start_up_notes_hidden():
                model = hub.load(str(folder))
        except Exception as exc:  # TF raises many unrelated types for a bad handle
            raise ModelLoadError(
                f"cannot load YAMNet from {handle!r} ({type(exc).__name__}: {exc}); set "
                "[embedding] yamnet_handle or ECOSIGHT_YAMNET_HANDLE to a local copy of "
                "the SavedModel (this machine may have no internet)"
            ) from exc
        identity = identify(handle, folder, pinned_sha256)
        logger.info("loaded YAMNet from %s as %s (sha256 %s)", handle, identity.model_id,
                    identity.fingerprint["savedmodel_sha256"])
        return cls(handle=handle, model_id=identity.model_id, fingerprint=identity.fingerprint, _model=model)

    def audioset_head(self) -> AudiosetHead:
        """YAMNet's final dense layer (embedding -> AudioSet logits), found by its shapes.

        Raises:
            ModelLoadError: the model has no such layer (not YAMNet's call contract).
        """
        kernels = [v for v in self._model.variables if tuple(v.shape) == (YAMNET_DIM, AUDIOSET_CLASSES)]
        biases = [v for v in self._model.variables if tuple(v.shape) == (AUDIOSET_CLASSES,)]
        if len(kernels) != 1 or len(biases) != 1:
            raise ModelLoadError(
                f"{self.handle} has no single {YAMNET_DIM}x{AUDIOSET_CLASSES} AudioSet layer; "
                "set [training] pooling = \"mean_max\" to train without YAMNet's AudioSet scores"
            )
        return AudiosetHead(np.asarray(kernels[0].numpy(), np.float32), np.asarray(biases[0].numpy(), np.float32))

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """Per-patch embeddings, computed CHUNK_PATCHES patches at a time.

        One call on a 600 s clip took 1.2 GiB above idle; in chunks the memory is that
        of one chunk whatever the clip's length. Patch k depends only on samples
        [k * HOP, k * HOP + PATCH) and YAMNet has no state across patches, so chunks
        whose waveforms overlap by PATCH - HOP give the same patches as one call.
        """
        import tensorflow as tf

        total = patch_count(len(waveform))
        chunks = []
        for first in range(0, total, CHUNK_PATCHES):
            last = min(total, first + CHUNK_PATCHES)
            segment = waveform[first * PATCH_HOP_SAMPLES:(last - 1) * PATCH_HOP_SAMPLES + PATCH_SAMPLES]
            _, embeddings, _ = self._model(tf.constant(segment, dtype=tf.float32))
            chunks.append(np.asarray(embeddings, dtype=np.float32))
        return np.concatenate(chunks)
