"""A fitted linear head as shipped: standardisation statistics, kernel and bias, saved as
arrays (`classifier.npz`, the event detector's file) and applied in numpy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LogisticFit:
    mean: np.ndarray  # (d,)
    std: np.ndarray  # (d,)
    kernel: np.ndarray  # (d, classes) on standardized features
    bias: np.ndarray  # (classes,)

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, mean=self.mean, std=self.std, kernel=self.kernel, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> LogisticFit:
        with np.load(path) as arrays:
            return cls(arrays["mean"], arrays["std"], arrays["kernel"], arrays["bias"])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = ((features - self.mean) / self.std) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))
