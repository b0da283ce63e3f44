"""Numbers about a classifier: metrics with intervals and the gun-shot threshold's choice
(the decision whether it may replace the current one is training/gate.py).

Pure numpy and scikit-learn: the daemon can gate, and `predict` can apply the
priority threshold, without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float | None
    validation_recall: float | None
    target: float
    met: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def choose_priority_threshold(
    val_probabilities: np.ndarray,
    val_labels: np.ndarray,
    priority_index: int,
    target_recall: float,
    min_precision: float = 0.0,
) -> ThresholdChoice:
    """A threshold on the priority class's probability, chosen on validation data.

    Among thresholds (at most 0.5) whose validation precision for the priority class
    stays at or above `min_precision`, the highest one that reaches the target recall;
    if none reaches it, the one with the best recall. A single hard validation clip
    cannot drag the threshold to ~0 and flag every sound as a gun shot. None (plain
    argmax) when validation has no priority samples or no threshold keeps the precision.
    """
    is_priority = val_labels == priority_index
    if not is_priority.any():
        return ThresholdChoice(None, None, target_recall, False,
                               "no validation samples of the priority class; plain argmax")
    scores = val_probabilities[:, priority_index]
    best: tuple[float, float, float] | None = None  # (recall, threshold, precision)
    for threshold in sorted({0.5, *(float(v) for v in scores[is_priority] if v <= 0.5)}, reverse=True):
        flagged = apply_priority_threshold(val_probabilities, priority_index, threshold) == priority_index
        recall = float(np.mean(flagged[is_priority]))
        precision = float(np.mean(is_priority[flagged])) if flagged.any() else 1.0
        if precision < min_precision:
            continue
        if best is None or recall > best[0]:
            best = (recall, threshold, precision)
        if recall >= target_recall:
            break
    if best is None:
        return ThresholdChoice(None, None, target_recall, False,
                               f"no threshold keeps validation precision >= {min_precision:g}; plain argmax")
    recall, threshold, precision = best
    return ThresholdChoice(threshold, recall, target_recall, recall >= target_recall,
                           f"validation recall {recall:.3f} at precision {precision:.3f} "
                           f"({int(is_priority.sum())} priority samples)")


CONFIDENCE = 0.95
_Z = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_ROUNDS = 1000


def wilson_interval(successes: int, trials: int) -> list[float] | None:
    """95% Wilson score interval of a proportion; None for no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + _Z**2 / trials
    centre = (p + _Z**2 / (2 * trials)) / denominator
    half = _Z * np.sqrt(p * (1 - p) / trials + _Z**2 / (4 * trials**2)) / denominator
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def format_interval(bounds: list[float] | None) -> str:
    """An interval as people read it after a figure: " [0.91, 0.99]" (nothing when unknown)."""
    return "" if not bounds else f" [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def bootstrap_macro_f1_interval(true_labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[float] | None:
    """95% percentile bootstrap interval of macro-F1 over test clips (seeded: same data, same interval)."""
    if len(true_labels) < 2:
        return None
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(true_labels), size=(BOOTSTRAP_ROUNDS, len(true_labels)))
    scores = [_macro_f1(true_labels[r], predicted[r], n_classes) for r in rows]
    low, high = np.percentile(scores, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present in truth or predictions (as scikit-learn's, fast)."""
    f1s = []
    for c in range(n_classes):
        tp = np.sum((truth == c) & (predicted == c))
        true_c, predicted_c = np.sum(truth == c), np.sum(predicted == c)
        if true_c + predicted_c:
            f1s.append(2 * tp / (true_c + predicted_c))
    return float(np.mean(f1s)) if f1s else 0.0


def classification_metrics(
    true_labels: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix,
    each rate with its sample size and a 95% interval (Wilson; bootstrap for macro-F1)."""
    # Imported here: scikit-learn costs the daemon 1.4 s of start-up, and only the
    # training process computes these.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    true_labels, predicted = np.asarray(true_labels), np.asarray(predicted)
    indices = list(range(len(classes)))
    if len(true_labels) == 0:  # scikit-learn refuses empty input
        zeros = np.zeros(len(classes))
        precision, recall, f1, support = zeros, zeros, zeros, zeros.astype(int)
        matrix = np.zeros((len(classes), len(classes)), dtype=int)
        macro_f1 = 0.0
    else:
        precision, recall, f1, support = precision_recall_fscore_support(
            true_labels, predicted, labels=indices, zero_division=0
        )
        matrix = confusion_matrix(true_labels, predicted, labels=indices)
        macro_f1 = float(f1_score(true_labels, predicted, labels=indices, average="macro", zero_division=0))
    hits = int(np.sum(true_labels == predicted))
    flagged = [int(np.sum(predicted == i)) for i in indices]
    return {
        "class_names": list(classes),
        "samples": int(len(true_labels)),
        "confidence": CONFIDENCE,
        "accuracy": float(accuracy_score(true_labels, predicted)) if len(true_labels) else 0.0,
        "accuracy_interval": wilson_interval(hits, len(true_labels)),
        "macro_f1": macro_f1,
        "macro_f1_interval": bootstrap_macro_f1_interval(true_labels, predicted, len(classes)),
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        "support": [int(v) for v in support],
        "confusion_matrix": matrix.tolist(),
        "per_class_metrics": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i]), "predicted": flagged[i],
                   "recall_interval": wilson_interval(int(matrix[i][i]), int(support[i])),
                   "precision_interval": wilson_interval(int(matrix[i][i]), flagged[i])}
            for i, name in enumerate(classes)
        },
    }


def class_recall(metrics: dict[str, Any], label: str) -> float | None:
    entry = metrics.get("per_class_metrics", {}).get(label)
    return None if entry is None or entry["support"] == 0 else float(entry["recall"])
