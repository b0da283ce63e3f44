"""[review] retrain_after: a retrain once that many review clips were written since the last
retrain began, so a ranger's round of decisions reaches the model without waiting for the
general new-sample threshold. Asked once per round; looked at every CHECK_S."""

from __future__ import annotations

from collections.abc import Callable

from ecosight_daemon.review.queue import ReviewQueue

CHECK_S = 5.0


class ReviewTrigger:
    def __init__(self, retrain_after: int) -> None:
        self.retrain_after = retrain_after
        self._next_check = 0.0
        self._asked_at: float | None = None  # wall-clock time of the request not yet followed by a retrain

    def check(self, now: float, wall: float, queue: ReviewQueue, last_started: Callable[[], float],
              running: bool) -> str | None:
        """A retrain request's reason when one is due, else None. `last_started`: when the
        last retrain began (wall clock; 0 if none did)."""
        if not self.retrain_after or now < self._next_check or running:
            return None
        self._next_check = now + CHECK_S
        since = last_started()
        if self._asked_at is not None and since < self._asked_at:
            return None  # asked already; the retrain has not begun
        fresh = queue.clips_since(since)
        if fresh < self.retrain_after:
            return None
        self._asked_at = wall
        return f"review: {fresh} clips since the last retrain"
