"""Clip features from per-patch embeddings: the one definition of each pooling method.

`mean_max_audioset` adds YAMNet's own AudioSet logits (its final dense layer applied to
each cached patch embedding, mean and max over patches): the max of "Gunshot, gunfire"
over a clip's patches is a cue a linear head on pooled embeddings cannot form itself.
The logits come from the cached embeddings, so nothing is embedded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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


class ArrayOps(Protocol):
    """The few array operations pooling needs, so one definition serves NumPy and TensorFlow."""

    def mean(self, x: Any) -> Any: ...
    def max(self, x: Any) -> Any: ...
    def std(self, x: Any) -> Any: ...
    def concat(self, parts: list[Any]) -> Any: ...
    def logits(self, patches: Any, head: AudiosetHead) -> Any: ...


class NumpyOps:
    def mean(self, x: Any) -> Any:
        return x.mean(axis=0)

    def max(self, x: Any) -> Any:
        return x.max(axis=0)

    def std(self, x: Any) -> Any:
        return x.std(axis=0)

    def concat(self, parts: list[Any]) -> Any:
        return np.concatenate(parts)

    def logits(self, patches: Any, head: AudiosetHead) -> Any:
        return head.logits(patches)


def pool_with(ops: ArrayOps, patches: Any, method: str, head: AudiosetHead | None = None) -> Any:
    """(patches, dim) -> one clip vector: the one definition of every pooling method.

    NumPy calls it through `pool_patches`; the exports (training/keras_head.py) with
    TensorFlow's operations, so a model on a device pools exactly as it was trained.
    """
    if method == "mean":
        return ops.mean(patches)
    if method == "mean_max":
        return ops.concat([ops.mean(patches), ops.max(patches)])
    if method == "mean_std":
        return ops.concat([ops.mean(patches), ops.std(patches)])
    if method == "mean_max_audioset":
        if head is None:
            raise ValueError("pooling mean_max_audioset needs YAMNet's AudioSet layer; none was given")
        logits = ops.logits(patches, head)
        return ops.concat([ops.mean(patches), ops.max(patches), ops.mean(logits), ops.max(logits)])
    raise ValueError(f"unknown pooling {method!r}; expected one of {', '.join(POOLINGS)}")


def pool_patches(patches: np.ndarray, method: str, head: AudiosetHead | None = None) -> np.ndarray:
    """(patches, dim) -> one clip vector; `method` is recorded with every model."""
    return np.asarray(pool_with(NumpyOps(), np.asarray(patches, dtype=np.float32), method, head))


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
