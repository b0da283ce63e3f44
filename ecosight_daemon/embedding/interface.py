"""What every YAMNet runtime offers: the `Embedder` protocol and its sizes (the patch geometry
is the front end's: embedding/frontend.py)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ecosight_daemon.pooling import AudiosetHead

YAMNET_DIM = 1024
AUDIOSET_CLASSES = 521


class Embedder(Protocol):
    """Turns 16 kHz mono float32 audio into per-patch embeddings."""

    model_id: str
    fingerprint: dict[str, Any]
    sample_rate: int
    dim: int

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """Return an (N, dim) float32 array, one row per 0.96 s patch."""
        ...

    def audioset_head(self) -> AudiosetHead:
        """The model's own classifier layer over the embeddings (for mean_max_audioset pooling)."""
        ...
