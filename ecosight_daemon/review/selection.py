"""Which stretches of a scored recording a person should hear, most teaching first:

- top: the highest-scoring events of each class (confirming alerts, harvesting positives);
- near_threshold: the best-scoring windows the model left as background (where it is unsure);
- below_threshold: a few windows picked at random among the rest (misses found, recall estimated).

At most one item per class and minute of a recording: neighbours teach nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecosight_daemon.detection.events import Event
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS

SHARES = (("top", 0.5), ("near_threshold", 0.3), ("below_threshold", 0.2))


@dataclass(frozen=True)
class Candidate:
    label: str
    centre_s: float
    start_s: float
    end_s: float
    score: float
    reason: str

    @property
    def minute(self) -> int:
        return int(self.centre_s // 60)


def select(events: list[Event], trace: WindowTrace, budget: int, seed: int) -> list[Candidate]:
    """Up to `budget` candidates, in the order they should be queued."""
    pools = {"top": _top(events), "near_threshold": _near(trace), "below_threshold": _below(trace, seed)}
    quotas = {reason: int(round(budget * share)) for reason, share in SHARES}
    chosen: list[Candidate] = []
    taken: set[tuple[str, int]] = set()
    for reason, _ in SHARES:  # each reason its share first; what one cannot fill goes to the others
        _take(pools[reason], quotas[reason], chosen, taken)
    for reason, _ in SHARES:
        _take(pools[reason], budget - len(chosen), chosen, taken)
    return chosen[:budget]


def _take(pool: list[Candidate], wanted: int, chosen: list[Candidate], taken: set[tuple[str, int]]) -> None:
    while wanted > 0 and pool:
        candidate = pool.pop(0)
        if (candidate.label, candidate.minute) in taken:
            continue
        taken.add((candidate.label, candidate.minute))
        chosen.append(candidate)
        wanted -= 1


def _top(events: list[Event]) -> list[Candidate]:
    """Events by score, the classes taking turns (a class with many events does not crowd out the rest)."""
    by_class: dict[str, list[Event]] = {}
    for event in sorted(events, key=lambda e: -e.score):
        by_class.setdefault(event.label, []).append(event)
    turns: list[Candidate] = []
    rank = 0
    while any(rank < len(ranked) for ranked in by_class.values()):
        for label in sorted(by_class):
            if rank < len(by_class[label]):
                e = by_class[label][rank]
                turns.append(Candidate(label, e.peak_s, e.start_s, e.end_s, e.score, "top"))
        rank += 1
    return turns


def _window(trace: WindowTrace, index: int, label: str, score: float, reason: str) -> Candidate:
    start = index * PATCH_HOP_SECONDS
    return Candidate(label, round(start + trace.window_s / 2, 3), round(start, 3), round(start + trace.window_s, 3),
                     round(score, 4), reason)


def _background_windows(trace: WindowTrace) -> tuple[np.ndarray, np.ndarray]:
    labels, _, best_score = trace.arrays()
    quiet = np.flatnonzero(labels == trace.background_index)
    return quiet, best_score[quiet]


def _near(trace: WindowTrace) -> list[Candidate]:
    quiet, scores = _background_windows(trace)
    background = trace.classes[trace.background_index] if trace.background_index >= 0 else ""
    order = np.argsort(-scores, kind="stable")[:2000]
    return [_window(trace, int(quiet[k]), background, float(scores[k]), "near_threshold") for k in order]


def _below(trace: WindowTrace, seed: int) -> list[Candidate]:
    quiet, scores = _background_windows(trace)
    background = trace.classes[trace.background_index] if trace.background_index >= 0 else ""
    picks = np.random.default_rng(seed).permutation(len(quiet))[:2000]
    return [_window(trace, int(quiet[k]), background, float(scores[k]), "below_threshold") for k in picks]
