"""The gate: may a candidate replace the current version? Two questions, both paired on the
same held-out data, a candidate refused only on evidence.

Clips: the candidate's macro-F1 and gun-shot recall against floors, and against the
current model on the same test clips (McNemar's test on the discordant pairs).

Detection: The gate's second question: would the candidate's event detector find fewer gun shots,
or raise more false alarms, than the current one?

Both detectors score the same sentinel soundscape (at least an hour) of the test split
(training/detector_training.py),
so the comparison is paired, as the clip gate's is: shots that one finds and the other
misses are McNemar's discordant pairs, and false alarms over the same hours are compared
by the conditional test for two Poisson counts (given c + i alarms, equal rates would
make the candidate's share Binomial(c + i, 1/2)). A candidate is refused only on evidence
(one-sided p < significance), and extra false alarms count only when the candidate's
rate is above the budget per hour: a detector within its budget is not refused for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Any

import numpy as np

from ecosight_daemon.training.evaluation import class_recall


@dataclass(frozen=True)
class GatePolicy:
    priority_class: str
    macro_f1_tolerance: float
    min_macro_f1: float
    min_priority_recall: float
    significance: float = 0.05


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    rule: str = ""
    statistics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "rule": self.rule, "statistics": self.statistics}


@dataclass(frozen=True)
class PairedPredictions:
    """Candidate and current model on the same test clips, as class indices."""

    truth: np.ndarray
    candidate: np.ndarray
    incumbent: np.ndarray


def mcnemar_worse(truth: np.ndarray, candidate: np.ndarray, incumbent: np.ndarray) -> dict[str, Any]:
    """Exact one-sided McNemar test that the candidate makes more mistakes than the incumbent.

    Only the discordant clips count: `lost` (incumbent right, candidate wrong) and
    `gained` (the reverse). p = P(X >= lost) for X ~ Binomial(lost + gained, 1/2).
    """
    candidate_right, incumbent_right = candidate == truth, incumbent == truth
    lost = int(np.sum(incumbent_right & ~candidate_right))
    gained = int(np.sum(candidate_right & ~incumbent_right))
    return {"clips": int(len(truth)), "lost": lost, "gained": gained, "p_value": round(sign_test_p(lost, gained), 6)}


def sign_test_p(worse: int, better: int) -> float:
    """P(X >= worse) for X ~ Binomial(worse + better, 1/2): how often chance alone would tip
    this many of the discordant cases against the candidate."""
    n = worse + better
    return 1.0 if n == 0 else float(sum(comb(n, k) for k in range(worse, n + 1)) / 2**n)


def gate(candidate: dict[str, Any], incumbent: dict[str, Any] | None, policy: GatePolicy,
         paired: PairedPredictions | None = None) -> GateDecision:
    """Promote only a candidate that is not worse than the current model beyond noise.

    Both are judged on the same test clips. A drop in priority-class recall, or a
    macro-F1 drop beyond the tolerance, rejects the candidate only when an exact paired
    McNemar test on those clips says the candidate's extra mistakes are unlikely to be
    chance (one-sided p < significance). With no comparable incumbent the candidate
    must clear the floors instead.
    """
    if candidate["samples"] == 0:
        return GateDecision(False, "the test split is empty; add recordings from more sources", "empty test split")
    f1 = candidate["macro_f1"]
    recall = class_recall(candidate, policy.priority_class)
    pri = policy.priority_class
    if incumbent is None or paired is None:
        return _first_model_gate(f1, recall, policy)
    old_f1, old_recall = incumbent["macro_f1"], class_recall(incumbent, pri)
    priority = candidate["class_names"].index(pri) if pri in candidate["class_names"] else None
    on_priority = paired.truth == priority
    statistics: dict[str, Any] = {
        "significance": policy.significance,
        "all_clips": mcnemar_worse(paired.truth, paired.candidate, paired.incumbent),
        "priority_clips": mcnemar_worse(paired.truth[on_priority], paired.candidate[on_priority],
                                        paired.incumbent[on_priority]),
        "macro_f1": [round(old_f1, 4), round(f1, 4)],
        "priority_recall": [old_recall, recall],
    }
    priority_p = statistics["priority_clips"]["p_value"]
    all_p = statistics["all_clips"]["p_value"]
    rule = f"paired McNemar, one-sided, significance {policy.significance:g}"
    if old_recall is not None and (recall or 0.0) < old_recall - 1e-9 and priority_p < policy.significance:
        return GateDecision(False, f"{pri} recall would drop from {old_recall:.3f} to {recall or 0.0:.3f} "
                            f"(p = {priority_p:.4f} on {int(on_priority.sum())} {pri} clips)", rule, statistics)
    if old_f1 - f1 > policy.macro_f1_tolerance and all_p < policy.significance:
        return GateDecision(False, f"macro-F1 would drop from {old_f1:.3f} to {f1:.3f}, more than the tolerance "
                            f"{policy.macro_f1_tolerance:.3f} (p = {all_p:.4f} on {len(paired.truth)} clips)",
                            rule, statistics)
    noise = ""
    if (old_recall is not None and (recall or 0.0) < old_recall - 1e-9) or old_f1 - f1 > policy.macro_f1_tolerance:
        noise = f"; the drop is within noise (p = {min(priority_p, all_p):.4f})"
    return GateDecision(True, f"macro-F1 {old_f1:.3f} -> {f1:.3f}, {pri} recall "
                        f"{'n/a' if old_recall is None else f'{old_recall:.3f}'} -> "
                        f"{'n/a' if recall is None else f'{recall:.3f}'}{noise}", rule, statistics)


def _first_model_gate(f1: float, recall: float | None, policy: GatePolicy) -> GateDecision:
    rule = "floors for a first model (no comparable current model)"
    statistics = {"macro_f1": f1, "priority_recall": recall, "min_macro_f1": policy.min_macro_f1,
                  "min_priority_recall": policy.min_priority_recall}
    pri = policy.priority_class
    if f1 < policy.min_macro_f1:
        return GateDecision(False, f"macro-F1 {f1:.3f} is below the floor {policy.min_macro_f1:.3f}", rule, statistics)
    if recall is not None and recall < policy.min_priority_recall:
        return GateDecision(False, f"{pri} recall {recall:.3f} is below the floor {policy.min_priority_recall:.3f}",
                            rule, statistics)
    recall_text = "no test samples" if recall is None else f"{recall:.3f}"
    return GateDecision(True, f"first model: macro-F1 {f1:.3f}, {pri} recall {recall_text}, floors met",
                        rule, statistics)


RULE = ("detection on the test split's sentinel soundscape: no confirmed shot lost, paired sign tests, "
        "one-sided")


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
    confirmed_lost = sorted((old_found - new_found) & set(test_split.get("confirmed", [])))
    statistics["confirmed_shots_lost"] = len(confirmed_lost)
    if confirmed_lost:
        return DetectionVerdict(True, f"in long recordings the new detector would miss {len(confirmed_lost)} "
                                f"{priority} events people confirmed on the Review page that the current one "
                                "finds", statistics)
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
