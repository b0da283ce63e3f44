from __future__ import annotations

import numpy as np

from ecosight_daemon.evaluation import (
    GatePolicy,
    apply_priority_threshold,
    choose_priority_threshold,
    classification_metrics,
    gate,
)

CLASSES = ["clips", "gun_shot"]
POLICY = GatePolicy("gun_shot", macro_f1_tolerance=0.02, min_macro_f1=0.5, min_priority_recall=0.5)


def test_threshold_only_ever_adds_priority_labels() -> None:
    p = np.array([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1]])
    assert apply_priority_threshold(p, 1, None).tolist() == [0, 1, 0]
    assert apply_priority_threshold(p, 1, 0.25).tolist() == [1, 1, 0]
    assert apply_priority_threshold(p, 1, 0.95).tolist() == [0, 1, 0]


def test_threshold_reaches_the_target_recall_on_validation() -> None:
    labels = np.array([1] * 10 + [0] * 10)
    scores = np.concatenate([np.linspace(0.05, 0.95, 10), np.full(10, 0.02)])
    p = np.stack([1 - scores, scores], axis=1)
    choice = choose_priority_threshold(p, labels, 1, target_recall=0.98)
    assert choice.met and choice.validation_recall == 1.0
    assert choice.threshold is not None and abs(choice.threshold - 0.05) < 1e-9
    loose = choose_priority_threshold(p, labels, 1, target_recall=0.5)
    assert loose.threshold == 0.5  # never demands more than a coin flip
    none = choose_priority_threshold(p[10:], labels[10:], 1, 0.98)
    assert none.threshold is None and not none.met


def metrics(true: list[int], predicted: list[int]) -> dict:
    return classification_metrics(np.array(true), np.array(predicted), CLASSES)


def test_metrics_match_hand_counts() -> None:
    m = metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class_metrics"]["gun_shot"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}


def test_gate() -> None:
    good = metrics([0, 0, 1, 1], [0, 0, 1, 1])
    worse_f1 = metrics([0, 0, 1, 1], [1, 0, 1, 1])
    lost_shot = metrics([0, 0, 1, 1], [0, 0, 0, 1])
    assert gate(good, None, POLICY).promote
    assert not gate(metrics([0, 0, 1, 1], [1, 1, 0, 0]), None, POLICY).promote
    decision = gate(worse_f1, good, POLICY)
    assert not decision.promote and "macro-F1 would drop" in decision.reason
    decision = gate(lost_shot, good, POLICY)
    assert not decision.promote and "gun_shot recall would drop" in decision.reason
    assert gate(good, worse_f1, POLICY).promote
    assert not gate(metrics([], []), None, POLICY).promote


def test_threshold_keeps_validation_precision() -> None:
    # Nine easy gun shots and one that looks like everything else: reaching 98% recall
    # would flag all ten background clips too.
    labels = np.array([1] * 10 + [0] * 10)
    scores = np.concatenate([np.full(9, 0.9), [0.01], np.full(10, 0.02)])
    p = np.stack([1 - scores, scores], axis=1)
    assert choose_priority_threshold(p, labels, 1, 0.98).threshold == 0.01  # unguarded: flags everything
    guarded = choose_priority_threshold(p, labels, 1, 0.98, min_precision=0.7)
    assert guarded.threshold == 0.5 and guarded.validation_recall == 0.9 and not guarded.met
