"""A trained classifier with what it needs to label clips: its classes, its pooling and
its gun-shot threshold. One way to load and apply a model, for `predict`, the drift
check and the gate's view of the current model.

Loading a Keras model imports TensorFlow, so callers import this lazily; a logistic head
with its classifier.npz loads without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold


@dataclass
class PublishedModel:
    classifier: Any  # a keras.Model
    classes: list[str]
    pooling: str
    priority_index: int | None
    threshold: float | None
    version: str | None = None
    embedding_model_id: str | None = None

    @classmethod
    def load(cls, path: Path, metadata: dict[str, Any], arrays: Path | None = None) -> PublishedModel:
        """The model at `path`, described by its metadata (classes, pooling, threshold...).

        With `arrays` (a logistic head's classifier.npz), the same model runs in NumPy and
        TensorFlow is never imported (~700 MiB less in a process that labels audio).
        """
        classes: list[str] = list(metadata["classes"])
        priority = metadata.get("priority_class")
        if arrays is not None and arrays.is_file():
            classifier: Any = LogisticFit.load(arrays)
        else:
            from ecosight_daemon.artifacts.keras_model import load_classifier

            classifier = load_classifier(path)
        return cls(
            classifier=classifier,
            classes=classes,
            pooling=str(metadata.get("pooling", "")),
            priority_index=classes.index(priority) if priority in classes else None,
            threshold=metadata.get("priority_threshold"),
            version=metadata.get("version"),
            embedding_model_id=metadata.get("embedding_model_id"),
        )

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if isinstance(self.classifier, LogisticFit):
            return np.asarray(self.classifier.probabilities(np.asarray(features, dtype=np.float32)), np.float32)
        from ecosight_daemon.artifacts.keras_model import predict_probabilities

        return predict_probabilities(self.classifier, features)

    def labels(self, features: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        """Class indices, the priority threshold applied."""
        scores = self.probabilities(features) if probabilities is None else probabilities
        return apply_priority_threshold(scores, self.priority_index, self.threshold)

    def labels_in(self, classes: list[str], features: np.ndarray) -> np.ndarray:
        """Labels as indices into another class list; a class missing there is -1 (a miss)."""
        return np.array([classes.index(self.classes[i]) if self.classes[i] in classes else -1
                         for i in self.labels(features)], dtype=np.int64)

    def accuracy(self, features: np.ndarray, true_labels: list[str]) -> float:
        """Share of clips labeled as given (classes the model never learned count as misses)."""
        predicted = self.labels(features)
        return float(np.mean([self.classes[p] == label for p, label in zip(predicted, true_labels, strict=True)]))
