"""Numbers about a classifier, and the decision whether it may replace the current one.

Pure numpy and scikit-learn: the daemon can gate, and `predict` can apply the
priority threshold, without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def apply_priority_threshold(
    probabilities: np.ndarray, priority_index: int | None, threshold: float | None
) -> np.ndarray:
    """Argmax labels, except that the priority class also wins wherever its probability
    reaches the threshold: a threshold can only add priority detections, never remove one."""
    probabilities = np.atleast_2d(probabilities)
    labels = probabilities.argmax(axis=1)
    if priority_index is None or threshold is None:
        return labels
    return np.where(probabilities[:, priority_index] >= threshold, priority_index, labels)


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


def classification_metrics(
    true_labels: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
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
    return {
        "class_names": list(classes),
        "samples": int(len(true_labels)),
        "accuracy": float(accuracy_score(true_labels, predicted)) if len(true_labels) else 0.0,
        "macro_f1": macro_f1,
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        "support": [int(v) for v in support],
        "confusion_matrix": matrix.tolist(),
        "per_class_metrics": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
    }


def class_recall(metrics: dict[str, Any], label: str) -> float | None:
    entry = metrics.get("per_class_metrics", {}).get(label)
    return None if entry is None or entry["support"] == 0 else float(entry["recall"])


@dataclass(frozen=True)
class GatePolicy:
    priority_class: str
    macro_f1_tolerance: float
    min_macro_f1: float
    min_priority_recall: float


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def gate(candidate: dict[str, Any], incumbent: dict[str, Any] | None, policy: GatePolicy) -> GateDecision:
    """Promote only a candidate that does not make things worse on the same test split.

    With no comparable incumbent the candidate must clear the floors instead.
    """
    if candidate["samples"] == 0:
        return GateDecision(False, "the test split is empty; add recordings from more sources")
    f1 = candidate["macro_f1"]
    recall = class_recall(candidate, policy.priority_class)
    pri = policy.priority_class
    if incumbent is None:
        if f1 < policy.min_macro_f1:
            return GateDecision(False, f"macro-F1 {f1:.3f} is below the floor {policy.min_macro_f1:.3f}")
        if recall is not None and recall < policy.min_priority_recall:
            return GateDecision(
                False, f"{pri} recall {recall:.3f} is below the floor {policy.min_priority_recall:.3f}"
            )
        recall_text = "no test samples" if recall is None else f"{recall:.3f}"
        return GateDecision(True, f"first model: macro-F1 {f1:.3f}, {pri} recall {recall_text}, floors met")
    old_f1 = incumbent["macro_f1"]
    old_recall = class_recall(incumbent, pri)
    if old_recall is not None and (recall is None or recall < old_recall - 1e-9):
        return GateDecision(False, f"{pri} recall would drop from {old_recall:.3f} to {recall or 0.0:.3f}")
    if old_f1 - f1 > policy.macro_f1_tolerance:
        return GateDecision(
            False, f"macro-F1 would drop from {old_f1:.3f} to {f1:.3f} "
            f"(more than the tolerance {policy.macro_f1_tolerance:.3f})"
        )
    return GateDecision(
        True, f"macro-F1 {old_f1:.3f} -> {f1:.3f}, {pri} recall "
        f"{'n/a' if old_recall is None else f'{old_recall:.3f}'} -> {'n/a' if recall is None else f'{recall:.3f}'}"
    )
