"""The default classifier head: class-balanced multinomial logistic regression.

Convex and fitted to convergence, so the same data give the same model on every seed:
no early stopping, no validation split spent on choosing an epoch, no seed lottery.
Pure numpy and scikit-learn; `training.keras_from_logistic` turns a fit into the Keras
model the operators load (Normalization with these statistics, then a softmax layer).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ecosight_daemon.artifacts.linear_head import LogisticFit

logger = logging.getLogger(__name__)

ABSENT_CLASS_BIAS = -30.0  # a class with no fitting samples is never predicted
MIN_STD = 1e-3  # Keras's Normalization divides by max(std, epsilon); constant features get 1
# Real embeddings converge in ~20 iterations (16 on the dev corpus); clips that carry no
# class signal at all (the load test's random noise) took ~600 and 25 s per fit.
MAX_ITERATIONS = 300


def fit_logistic(features: np.ndarray, labels: np.ndarray, n_classes: int, c: float) -> LogisticFit:
    """Standardize on these samples, then fit with balanced class weights and L2 (1/c)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"need samples of at least 2 classes to fit, have {len(present)}")
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std = np.where(std > MIN_STD, std, 1.0)
    # float32 throughout: half the memory of a float64 copy (10,000 clips x 3,090 features)
    standardized = (np.asarray(features, dtype=np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITERATIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(standardized, labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("logistic regression stopped after %d iterations before converging (the labels may "
                       "carry little signal); the fit is used as it is", MAX_ITERATIONS)
    kernel = np.zeros((features.shape[1], n_classes))
    bias = np.full(n_classes, ABSENT_CLASS_BIAS)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn fits one logit for two classes: softmax of (-z/2, z/2)
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel[:, model.classes_] = coef.T
    bias[model.classes_] = intercept
    return LogisticFit(mean.astype(np.float32), std.astype(np.float32), kernel.astype(np.float32),
                       bias.astype(np.float32))


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_classes: int, c: float, folds: int = 4,
) -> np.ndarray | None:
    """Each sample scored by a fit that never saw its source recording.

    None when there are too few recordings (or samples of a class) for two folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    smallest_class = int(np.bincount(labels)[np.unique(labels)].min())
    folds = min(folds, len(set(groups.tolist())), smallest_class)  # stratified folds need one per class
    if folds < 2:
        return None
    scores = np.zeros((len(labels), n_classes), dtype=np.float32)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        splits = list(splitter.split(features, labels, groups))
    for fit_rows, score_rows in splits:
        if len(np.unique(labels[fit_rows])) < 2:
            return None
        scores[score_rows] = fit_logistic(features[fit_rows], labels[fit_rows], n_classes, c).probabilities(
            features[score_rows])
    return scores
