"""The compiled training loop does what Keras's `fit` did: same loss, weights, updates."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ecosight_daemon.training.keras_head import (  # noqa: E402
    balanced_class_weights,
    build_classifier,
    fit_classifier,
)
from ecosight_daemon.training.recipe import ClassifierParams  # noqa: E402


def separable_data(seed: int, n: int = 90, dim: int = 16, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centers = rng.standard_normal((classes, dim)) * 2
    features = centers[labels] + rng.standard_normal((n, dim))
    return features.astype(np.float32), labels


@pytest.mark.parametrize("hidden_units", [(), (8,)])
def test_one_full_batch_epoch_matches_keras_fit(hidden_units: tuple[int, ...]) -> None:
    """With the whole training set in one batch, batch order cannot differ, so the compiled
    loop and Keras's fit must produce the same weights (class weights and L2 included)."""
    features, labels = separable_data(0)
    keep = np.concatenate([np.flatnonzero(labels != 2), np.flatnonzero(labels == 2)[:5]])  # unbalanced
    x, y = features[keep], labels[keep]
    params = ClassifierParams(hidden_units, 0.0, False, 0.01, 0.001, epochs=4, batch_size=len(y), patience=50,
                              seed=3)

    ours = fit_classifier(x, y, x, y, 3, params)

    keras.utils.set_random_seed(params.seed)
    reference = build_classifier(x, 3, params)
    fitted = reference.fit(x, y, epochs=params.epochs, batch_size=len(y), shuffle=True, verbose=0,
                           class_weight=balanced_class_weights(y, 3), validation_data=(x, y))

    for mine, theirs in zip(ours.model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.history["loss"], fitted.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(ours.history["val_loss"], fitted.history["val_loss"], rtol=1e-4)


def test_early_stopping_restores_the_best_epoch_and_reports_history() -> None:
    features, labels = separable_data(1)
    train, val = slice(0, 60), slice(60, 90)
    labels[val] = np.random.default_rng(5).permutation(labels[val])  # validation gets worse as training fits
    params = ClassifierParams((), 0.0, False, 0.05, 0.0, epochs=200, batch_size=16, patience=4, seed=0)
    fit = fit_classifier(features[train], labels[train], features[val], labels[val], 3, params)
    best = int(np.argmin(fit.history["val_loss"]))
    assert fit.epochs_run < 200 and fit.epochs_run - 1 - best == params.patience
    assert set(fit.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    probabilities = np.asarray(fit.model(features[val]))
    loss = -np.mean(np.log(probabilities[np.arange(30), labels[val]]))
    assert loss == pytest.approx(fit.history["val_loss"][best], rel=1e-4)


def test_a_stop_request_ends_training_at_the_next_epoch() -> None:
    features, labels = separable_data(2)
    params = ClassifierParams((), 0.0, False, 0.01, 0.0, epochs=500, batch_size=16, patience=500, seed=0)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    fit = fit_classifier(features, labels, features, labels, 3, params, should_stop)
    assert fit.stopped_early_by_request and fit.epochs_run == 3
