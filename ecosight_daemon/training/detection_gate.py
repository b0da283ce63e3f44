"""The gate's second question: would the candidate's event detector find fewer gun shots,
or raise more false alarms, than the current one?

Both detectors score the same soundscape of the test split (models/detector_training.py),
so the comparison is paired, as the clip gate's is: shots that one finds and the other
misses are McNemar's discordant pairs, and false alarms over the same hours are compared
by the conditional test for two Poisson counts (given c + i alarms, equal rates would
make the candidate's share Binomial(c + i, 1/2)). A candidate is refused only on evidence
(one-sided p < significance), and extra false alarms count only when the candidate's
rate is above the budget per hour: a detector within its budget is not refused for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ecosight_daemon.training.evaluation import GateDecision, sign_test_p

RULE = "detection on the test split's soundscape: paired sign tests, one-sided"


@dataclass(frozen=True)
class DetectionVerdict:
    worse: bool
    reason: str
    statistics: dict[str, Any] = field(default_factory=dict)


def detection_verdict(test_split: dict[str, Any], priority: str, budget_per_hour: float,
                      significance: float) -> DetectionVerdict | None:
    """None when there is nothing to compare (no current detector, no shots scored)."""
    candidate, incumbent = test_split.get("candidate"), test_split.get("incumbent")
    if not candidate or not incumbent or "found" not in candidate or "found" not in incumbent:
        return None
    new_found, old_found = set(candidate["found"]), set(incumbent["found"])
    lost, gained = len(old_found - new_found), len(new_found - old_found)
    extra_alarms, fewer_alarms = candidate["false_alarms"], incumbent["false_alarms"]
    statistics = {
        "significance": significance, "hours": test_split["hours"], "shots": test_split["shots"],
        "shots_lost": lost, "shots_gained": gained, "recall_p_value": round(sign_test_p(lost, gained), 6),
        "false_alarms": [fewer_alarms, extra_alarms],
        "false_alarms_p_value": round(sign_test_p(extra_alarms, fewer_alarms), 6),
        "budget_false_alarms_per_hour": budget_per_hour,
    }
    recall_p, alarms_p = statistics["recall_p_value"], statistics["false_alarms_p_value"]
    if lost > gained and recall_p < significance:
        return DetectionVerdict(True, f"in long recordings the new detector would miss {lost} {priority} events "
                                f"the current one finds (and find {gained} it misses; p = {recall_p:.4f} on "
                                f"{test_split['shots']} shots)", statistics)
    rate = candidate["false_alarms_per_hour"]
    if rate > budget_per_hour and extra_alarms > fewer_alarms and alarms_p < significance:
        return DetectionVerdict(True, f"in long recordings the new detector would raise {extra_alarms} false "
                                f"alarms where the current one raises {fewer_alarms} ({rate:.1f} per hour, over "
                                f"the budget of {budget_per_hour:g}; p = {alarms_p:.4f})", statistics)
    return DetectionVerdict(False, "", statistics)


def judge_detection(decision: GateDecision, test_split: dict[str, Any] | None, priority: str,
                    budget_per_hour: float, significance: float) -> GateDecision:
    """The clip gate's decision, refused when the detector is shown worse; its statistics
    gain the detection comparison either way."""
    verdict = detection_verdict(test_split or {}, priority, budget_per_hour, significance)
    if verdict is None:
        return decision
    statistics = {**decision.statistics, "detection": verdict.statistics}
    if decision.promote and verdict.worse:
        return GateDecision(False, verdict.reason, RULE, statistics)
    return GateDecision(decision.promote, decision.reason, decision.rule, statistics)
