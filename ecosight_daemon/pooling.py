"""Clip features from per-patch embeddings: the one pooling code path (numpy side).

`mean_max_audioset` adds YAMNet's own AudioSet logits (its final dense layer applied to
each cached patch embedding, mean and max over patches): the max of "Gunshot, gunfire"
over a clip's patches is a cue a linear head on pooled embeddings cannot form itself.
The logits come from the cached embeddings, so nothing is embedded again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POOLINGS = ("mean", "mean_max", "mean_std", "mean_max_audioset")


@dataclass(frozen=True)
class AudiosetHead:
    """YAMNet's classifier layer: AudioSet logits = embeddings @ kernel + bias."""

    kernel: np.ndarray  # (1024, 521) float32
    bias: np.ndarray  # (521,) float32

    def logits(self, patches: np.ndarray) -> np.ndarray:
        return np.asarray(patches @ self.kernel + self.bias)


def needs_audioset_head(method: str) -> bool:
    return method == "mean_max_audioset"


def pool_patches(patches: np.ndarray, method: str, head: AudiosetHead | None = None) -> np.ndarray:
    """(patches, dim) -> one clip vector; `method` is recorded with every model."""
    patches = np.asarray(patches, dtype=np.float32)
    if method == "mean":
        return np.asarray(patches.mean(axis=0))
    if method == "mean_max":
        return np.concatenate([patches.mean(axis=0), patches.max(axis=0)])
    if method == "mean_std":
        return np.concatenate([patches.mean(axis=0), patches.std(axis=0)])
    if method == "mean_max_audioset":
        if head is None:
            raise ValueError("pooling mean_max_audioset needs YAMNet's AudioSet layer; none was given")
        logits = head.logits(patches)
        return np.concatenate([patches.mean(axis=0), patches.max(axis=0), logits.mean(axis=0), logits.max(axis=0)])
    raise ValueError(f"unknown pooling {method!r}; expected one of {', '.join(POOLINGS)}")


def pool_clips(clips: list[np.ndarray], method: str, head: AudiosetHead | None = None) -> np.ndarray:
    """pool_patches for many clips at once: (clips, features) float32.

    The AudioSet logits of every patch of every clip come from one matrix product, not
    one small product per clip.
    """
    if not clips:
        return np.zeros((0, 0), dtype=np.float32)
    if not needs_audioset_head(method):
        return np.stack([pool_patches(c, method) for c in clips]).astype(np.float32)
    if head is None:
        raise ValueError("pooling mean_max_audioset needs YAMNet's AudioSet layer; none was given")
    patches = np.concatenate([np.asarray(c, dtype=np.float32) for c in clips])
    starts = np.cumsum([0] + [len(c) for c in clips[:-1]])
    counts = np.array([len(c) for c in clips], dtype=np.float32)[:, None]
    logits = head.logits(patches)
    return np.concatenate([
        np.add.reduceat(patches, starts) / counts, np.maximum.reduceat(patches, starts),
        np.add.reduceat(logits, starts) / counts, np.maximum.reduceat(logits, starts),
    ], axis=1).astype(np.float32)
