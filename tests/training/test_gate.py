"""The gate's detection question on hand-counted figures: refuse only on evidence."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.training.detector_training import sentinel_summary
from ecosight_daemon.training.gate import GateDecision, detection_verdict, judge_detection

HOURS = 0.5


def split(candidate: tuple[list[int], int], incumbent: tuple[list[int], int] | None, shots: int = 20) -> dict[str, Any]:
    def figures(found: list[int], false_alarms: int) -> dict[str, Any]:
        return {"recall": len(found) / shots, "found": found, "false_alarms": false_alarms,
                "false_alarms_per_hour": false_alarms / HOURS}

    test = {"hours": HOURS, "shots": shots, "candidate": figures(*candidate)}
    return test | ({"incumbent": figures(*incumbent)} if incumbent else {})


ALL = list(range(20))
PROMOTED = GateDecision(True, "macro-F1 0.930 -> 0.935", "paired McNemar", {"macro_f1": [0.93, 0.935]})


def verdict(test: dict[str, Any]):  # type: ignore[no-untyped-def]
    return detection_verdict(test, "gun_shot", budget_per_hour=1.0, significance=0.05)


def test_nothing_to_compare_without_a_current_detector() -> None:
    assert verdict(split((ALL, 0), None)) is None
    assert judge_detection(PROMOTED, None, "gun_shot", 1.0, 0.05) is PROMOTED


def test_a_real_loss_of_shots_refuses_the_candidate() -> None:
    result = verdict(split((ALL[6:], 0), (ALL, 0)))  # six shots lost, none gained: p = 1/64
    assert result.worse and "miss 6 gun_shot events" in result.reason
    assert result.statistics["recall_p_value"] == round(1 / 64, 6)
    decision = judge_detection(PROMOTED, split((ALL[6:], 0), (ALL, 0)), "gun_shot", 1.0, 0.05)
    assert not decision.promote and decision.reason == result.reason
    assert decision.statistics["macro_f1"] == [0.93, 0.935] and decision.statistics["detection"]["shots_lost"] == 6


def test_a_loss_within_noise_or_traded_for_gains_is_not_refused() -> None:
    assert not verdict(split((ALL[2:], 0), (ALL, 0))).worse  # two lost: p = 1/4
    assert not verdict(split((ALL[6:], 0), (ALL[:14], 0))).worse  # six lost, six gained


def test_more_false_alarms_refuse_only_beyond_the_budget_and_noise() -> None:
    flood = verdict(split((ALL, 7), (ALL, 0)))  # 14 per hour where there were none: p = 1/128
    assert flood.worse and "raise 7 false alarms where the current one raises 0" in flood.reason
    assert not verdict(split((ALL, 3), (ALL, 1))).worse  # 6 per hour, but 3 vs 1 is noise (p = 5/16)
    within_budget = detection_verdict(split((ALL, 7), (ALL, 0)), "gun_shot", budget_per_hour=20.0,
                                      significance=0.05)
    assert not within_budget.worse  # more alarms, still within the budget asked for


def test_a_rejected_or_forced_decision_is_not_turned_into_a_promotion() -> None:
    rejected = GateDecision(False, "macro-F1 would drop", "paired McNemar", {})
    better = split((ALL, 0), (ALL[5:], 4))
    decision = judge_detection(rejected, better, "gun_shot", 1.0, 0.05)
    assert not decision.promote and decision.reason == "macro-F1 would drop"
    assert decision.statistics["detection"]["shots_gained"] == 5


def test_losing_one_shot_people_confirmed_refuses_the_candidate_whatever_the_noise() -> None:
    confirmed = split((ALL[1:], 0), (ALL, 0)) | {"confirmed": [0, 7]}  # shot 0 lost: one shot, p = 1/2
    result = verdict(confirmed)
    assert result.worse and "miss 1 gun_shot events people confirmed on the Review page" in result.reason
    assert result.statistics["confirmed_shots_lost"] == 1
    never_found = split((ALL[1:], 0), (ALL[1:], 0)) | {"confirmed": [0]}  # neither finds it: nothing lost
    assert not verdict(never_found).worse
    unconfirmed = split((ALL[1:], 0), (ALL, 0)) | {"confirmed": [7]}
    assert not verdict(unconfirmed).worse  # one ordinary shot lost is noise


def test_a_candidate_let_through_over_the_budget_says_so_in_the_reason() -> None:
    # Both raise as many false alarms on the sentinel (3 in half an hour, the budget 1 an hour): no
    # evidence the candidate is worse, so it is not refused, but the version's reason says where it stands.
    both_over = split((ALL, 3), (ALL, 3))
    assert not verdict(both_over).worse
    said = sentinel_summary({"test_split": both_over}, budget_per_hour=1.0)
    assert "false alarms per hour 6.00 -> 6.00, over the budget of 1 an hour" in said, said
    assert "over the budget" not in sentinel_summary({"test_split": split((ALL, 0), (ALL, 3))}, 1.0)
    assert "over the budget" not in sentinel_summary({"test_split": both_over}, budget_per_hour=10.0)
    assert sentinel_summary({"test_split": {"skipped": "no shots"}}, 1.0) == ""
