"""What every YAMNet runtime offers: the `Embedder` protocol and YAMNet's patch geometry."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ecosight_daemon.pooling import AudiosetHead

YAMNET_DIM = 1024
AUDIOSET_CLASSES = 521
PATCH_SAMPLES = 15_600  # 0.975 s: one YAMNet patch
HOP_SAMPLES = 7_680  # 0.48 s between patch starts


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


def patch_count(num_samples: int) -> int:
    """YAMNet's number of patches for a clip of num_samples (it zero-pads short clips)."""
    extra = max(0, num_samples - PATCH_SAMPLES)
    return 1 + -(-extra // HOP_SAMPLES)
