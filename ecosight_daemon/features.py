"""Clip features from per-patch embeddings: the one pooling code path (numpy side)."""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "mean_max", "mean_std")


def pool_patches(patches: np.ndarray, method: str) -> np.ndarray:
    """(patches, dim) -> one clip vector; `method` is recorded with every model."""
    patches = np.asarray(patches, dtype=np.float32)
    if method == "mean":
        return patches.mean(axis=0)
    if method == "mean_max":
        return np.concatenate([patches.mean(axis=0), patches.max(axis=0)])
    if method == "mean_std":
        return np.concatenate([patches.mean(axis=0), patches.std(axis=0)])
    raise ValueError(f"unknown pooling {method!r}; expected one of {', '.join(POOLINGS)}")
