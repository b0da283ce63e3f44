from __future__ import annotations

import numpy as np

from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold
from ecosight_daemon.training.evaluation import choose_priority_threshold, classification_metrics, wilson_interval
from ecosight_daemon.training.gate import GatePolicy, PairedPredictions, gate, mcnemar_worse

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
    gun = m["per_class_metrics"]["gun_shot"]
    assert {k: gun[k] for k in ("precision", "recall", "f1", "support", "predicted")} == {
        "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2, "predicted": 3}
    assert gun["precision_interval"] == [0.2077, 0.9385]  # Wilson 95% for 2 of 3, as published
    assert gun["recall_interval"] == [0.3424, 1.0]  # 2 of 2: a perfect score on two clips proves little
    assert m["accuracy_interval"] == wilson_interval(3, 4)
    low, high = m["macro_f1_interval"]
    assert low < m["macro_f1"] <= high


def test_wilson_interval_narrows_with_more_samples() -> None:
    assert wilson_interval(0, 0) is None
    small, large = wilson_interval(19, 19), wilson_interval(950, 1000)
    assert small[1] == 1.0 and small[0] < 0.85  # "1.000 on 19 clips" means at least ~0.83
    assert large[0] > 0.93 and large[1] < 0.97


def test_mcnemar_counts_only_discordant_clips() -> None:
    truth = np.zeros(20, dtype=int)
    incumbent = np.zeros(20, dtype=int)
    candidate = np.array([1] * 5 + [0] * 15)
    incumbent[5] = 1  # one clip only the candidate gets right
    result = mcnemar_worse(truth, candidate, incumbent)
    assert (result["lost"], result["gained"]) == (5, 1)
    assert result["p_value"] == round(7 / 64, 6)  # P(X >= 5), X ~ Binomial(6, 1/2)
    assert mcnemar_worse(truth, truth, truth)["p_value"] == 1.0


def paired(truth: list[int], candidate: list[int], incumbent: list[int]) -> tuple[dict, dict, PairedPredictions]:
    t, c, i = (np.array(v) for v in (truth, candidate, incumbent))
    return metrics(truth, candidate), metrics(truth, incumbent), PairedPredictions(t, c, i)


def judge(truth: list[int], candidate: list[int], incumbent: list[int]):  # type: ignore[no-untyped-def]
    new, old, predictions = paired(truth, candidate, incumbent)
    return gate(new, old, POLICY, predictions)


def test_gate_floors_for_a_first_model() -> None:
    assert gate(metrics([0, 0, 1, 1], [0, 0, 1, 1]), None, POLICY).promote
    decision = gate(metrics([0, 0, 1, 1], [1, 1, 0, 0]), None, POLICY)
    assert not decision.promote and decision.rule.startswith("floors")
    assert not gate(metrics([], []), None, POLICY).promote


def test_gate_does_not_reject_on_noise() -> None:
    truth = [0] * 20 + [1] * 20
    incumbent = list(truth)
    candidate = list(truth)
    candidate[20] = 0  # one gun shot lost: recall 1.00 -> 0.95, p = 0.5
    decision = judge(truth, candidate, incumbent)
    assert decision.promote and "within noise" in decision.reason
    assert decision.statistics["priority_clips"] == {"clips": 20, "lost": 1, "gained": 0, "p_value": 0.5}


def test_gate_rejects_a_real_loss_of_gun_shots() -> None:
    truth = [0] * 20 + [1] * 20
    candidate = list(truth)
    for index in range(20, 26):
        candidate[index] = 0  # six gun shots lost, none gained: p = 1/64
    decision = judge(truth, candidate, list(truth))
    assert not decision.promote and "gun_shot recall would drop" in decision.reason
    assert decision.statistics["priority_clips"]["p_value"] == round(1 / 64, 6)
    assert "McNemar" in decision.rule


def test_gate_rejects_a_real_macro_f1_drop() -> None:
    truth = [0] * 30 + [1] * 10
    candidate = [1] * 8 + [0] * 22 + [1] * 10  # eight background clips now flagged
    decision = judge(truth, candidate, list(truth))
    assert not decision.promote and "macro-F1 would drop" in decision.reason
    assert judge(truth, list(truth), candidate).promote  # the reverse is an improvement


def test_threshold_keeps_validation_precision() -> None:
    # Nine easy gun shots and one that looks like everything else: reaching 98% recall
    # would flag all ten background clips too.
    labels = np.array([1] * 10 + [0] * 10)
    scores = np.concatenate([np.full(9, 0.9), [0.01], np.full(10, 0.02)])
    p = np.stack([1 - scores, scores], axis=1)
    assert choose_priority_threshold(p, labels, 1, 0.98).threshold == 0.01  # unguarded: flags everything
    guarded = choose_priority_threshold(p, labels, 1, 0.98, min_precision=0.7)
    assert guarded.threshold == 0.5 and guarded.validation_recall == 0.9 and not guarded.met
