"""Window labels to events: consecutive windows of one class merged, each event with its
start, end, peak time and peak score. The background class reports nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS

MAX_GAP_WINDOWS = 1  # windows of one class this close apart are one event


@dataclass(frozen=True)
class Event:
    label: str
    start_s: float
    end_s: float
    peak_s: float
    score: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def merge_windows(labels: np.ndarray, scores: np.ndarray, classes: list[str], background: str,
                  window_s: float, first_window: int = 0) -> list[Event]:
    """Events from per-window class indices and (windows, classes) scores, in time order.

    Window k (counted from `first_window`) covers [k * PATCH_HOP_SECONDS, k * PATCH_HOP_SECONDS + window_s); an
    event's peak is the middle of its best-scoring window.
    """
    events: list[Event] = []
    for index, label in enumerate(classes):
        if label == background:
            continue
        hits = np.flatnonzero(labels == index)
        for run in np.split(hits, np.flatnonzero(np.diff(hits) > MAX_GAP_WINDOWS + 1) + 1) if len(hits) else []:
            best = int(run[np.argmax(scores[run, index])])
            events.append(Event(
                label=label,
                start_s=round((first_window + int(run[0])) * PATCH_HOP_SECONDS, 3),
                end_s=round((first_window + int(run[-1])) * PATCH_HOP_SECONDS + window_s, 3),
                peak_s=round((first_window + best) * PATCH_HOP_SECONDS + window_s / 2, 3),
                score=round(float(scores[best, index]), 4),
            ))
    return sorted(events, key=lambda e: (e.start_s, e.label))


def join_across_chunks(events: list[Event]) -> list[Event]:
    """An event cut by a chunk boundary is one event: same class, overlapping or touching."""
    joined: list[Event] = []
    for event in sorted(events, key=lambda e: (e.label, e.start_s)):
        previous = joined[-1] if joined else None
        if previous is not None and previous.label == event.label and event.start_s <= previous.end_s:
            best = previous if previous.score >= event.score else event
            joined[-1] = Event(event.label, previous.start_s, max(previous.end_s, event.end_s), best.peak_s,
                               best.score)
        else:
            joined.append(event)
    return sorted(joined, key=lambda e: (e.start_s, e.label))
