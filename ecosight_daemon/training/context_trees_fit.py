"""Fitting the context trees (artifacts/context_trees.py says what they are) with scikit-learn,
in the training process, and reading them out as arrays."""

from __future__ import annotations

import numpy as np

from ecosight_daemon.artifacts.context_trees import ContextTrees

ITERATIONS = 300
LEARNING_RATE = 0.08
L2 = 1.0


def fit_context_trees(features: np.ndarray, is_shot: np.ndarray, seed: int) -> ContextTrees:
    """features: (N, F) context_features of whole soundscapes (each patch with its neighbours);
    is_shot: (N,) 0/1. Shots weigh as much as everything else together, as in
    benchmarks/detection_stacked.py where they were measured."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(is_shot, np.int64)
    if y.min() == y.max():
        raise ValueError("the context trees need both shots and non-shots to learn from")
    weights = np.where(y == 1, (y == 0).sum() / max(1, (y == 1).sum()), 1.0)
    model = HistGradientBoostingClassifier(max_iter=ITERATIONS, learning_rate=LEARNING_RATE, l2_regularization=L2,
                                           random_state=seed)
    model.fit(np.asarray(features, np.float32), y, sample_weight=weights)
    return ContextTrees.from_sklearn(model)
