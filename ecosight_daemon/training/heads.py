"""The two classifier heads a training run can fit, each with its gun-shot threshold.

`logistic` (the default): a convex fit, its threshold from out-of-fold scores, a twin
fitted without the test split for the figures and the gate, and the shipped model
refitted on every sample. `keras`: a gradient-trained head with early stopping on the
validation split. Both run inside the training process (they import TensorFlow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.linear_head import LogisticFit
from ecosight_daemon.training.evaluation import choose_priority_threshold
from ecosight_daemon.training.job_data import TEST, TRAIN, VALIDATION
from ecosight_daemon.training.logistic_head import fit_logistic, out_of_fold_probabilities
from ecosight_daemon.training.protocol import Progress
from ecosight_daemon.training.recipe import TrainingRecipe


@dataclass
class FittedHead:
    """What one recipe produced: the model to ship and the twin the gate judges.

    `holdout_model` never saw the test split; `model` may have (the logistic head is
    refitted on every sample once its test figures are taken). Both are the same
    object when the recipe does not refit.
    """

    model: Any
    holdout_model: Any
    threshold: float | None
    threshold_info: dict[str, Any]
    test_probabilities: np.ndarray
    history: dict[str, list[float]]
    epochs_run: int
    arrays: LogisticFit | None = None  # the shipped model as NumPy arrays (logistic heads)


def fit_logistic_head(features: np.ndarray, labels: np.ndarray, splits: np.ndarray, groups: np.ndarray,
                      classes: list[str], recipe: TrainingRecipe,
                      report: Callable[[Progress], None] = lambda progress: None) -> FittedHead:
    """Threshold from out-of-fold scores on train+validation, a twin fitted there for the
    test figures, then the shipped model refitted on every sample."""
    from ecosight_daemon.training.keras_head import keras_from_logistic

    c = recipe.logistic_c
    learn = splits != 2
    test = splits == TEST
    threshold, threshold_info = None, {"note": f"{recipe.priority_class} is not among the trained classes"}
    report(Progress("out-of-fold scores for the gun-shot threshold"))
    scores = out_of_fold_probabilities(features[learn], labels[learn], groups[learn], len(classes), c)
    if recipe.priority_class in classes:
        if scores is None:
            threshold_info = {"note": "too few recordings for out-of-fold scores; plain argmax"}
        else:
            choice = choose_priority_threshold(scores, labels[learn], classes.index(recipe.priority_class),
                                               recipe.priority_recall_target, recipe.priority_min_precision)
            threshold, threshold_info = choice.threshold, {**choice.as_dict(), "scored_on": "out-of-fold"}
    report(Progress("the holdout twin (train + validation)"))
    twin = fit_logistic(features[learn], labels[learn], len(classes), c)
    report(Progress("the shipped model (every sample)"))
    shipped = fit_logistic(features, labels, len(classes), c) if test.any() else twin
    holdout_model = keras_from_logistic(twin)
    model = keras_from_logistic(shipped) if shipped is not twin else holdout_model
    history = _one_fit_history(shipped.probabilities(features), labels, scores, labels[learn])
    return FittedHead(model, holdout_model, threshold, threshold_info, twin.probabilities(features[test]), history, 1,
                      shipped)


def _one_fit_history(fitted: np.ndarray, labels: np.ndarray, out_of_fold: np.ndarray | None,
                     out_of_fold_labels: np.ndarray) -> dict[str, list[float]]:
    """The old history file's keys for a fit with no epochs: one entry, the converged fit's
    loss and accuracy on what it learned from, and the out-of-fold ones as "validation"."""
    def loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1.0))))

    history = {"loss": [loss(fitted, labels)], "accuracy": [float(np.mean(fitted.argmax(axis=1) == labels))]}
    if out_of_fold is not None:
        history["val_loss"] = [loss(out_of_fold, out_of_fold_labels)]
        history["val_accuracy"] = [float(np.mean(out_of_fold.argmax(axis=1) == out_of_fold_labels))]
    return history


def fit_keras_head(features: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: list[str],
                   recipe: TrainingRecipe, should_stop: Callable[[], bool],
                   report: Callable[[Progress], None] = lambda progress: None) -> FittedHead | None:
    """Gradient-trained head with hidden layers: early stopping and threshold on validation."""
    from ecosight_daemon.artifacts.keras_model import predict_probabilities
    from ecosight_daemon.training.keras_head import fit_classifier

    train, val, test = (splits == TRAIN), (splits == VALIDATION), (splits == TEST)
    fit = fit_classifier(features[train], labels[train], features[val], labels[val], len(classes), recipe.classifier,
                         should_stop, lambda epoch, loss, val_loss: report(Progress("epochs", epoch, loss, val_loss)))
    if fit.stopped_early_by_request:
        return None
    threshold, threshold_info = None, {"note": f"{recipe.priority_class} is not among the trained classes"}
    if recipe.priority_class in classes:
        choice = choose_priority_threshold(predict_probabilities(fit.model, features[val]), labels[val],
                                           classes.index(recipe.priority_class), recipe.priority_recall_target,
                                           recipe.priority_min_precision)
        threshold, threshold_info = choice.threshold, {**choice.as_dict(), "scored_on": "validation split"}
    return FittedHead(fit.model, fit.model, threshold, threshold_info,
                      predict_probabilities(fit.model, features[test]), fit.history, fit.epochs_run)
