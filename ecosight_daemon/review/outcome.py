"""What an item's decisions add up to. Each reviewer's latest decision stands (an undone
one does not); a skip is no opinion. An item counts only when the standing decisions agree."""

from __future__ import annotations

from ecosight_daemon.store.review import Decision


def standing(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.undone_at is None and d.verdict != "skip"]


def outcome_of(decisions: list[Decision]) -> tuple[str, str | None]:
    """(pending | agreed | uncertain | disagreed, the agreed class or None)."""
    views = standing(decisions)
    if not views:
        return "pending", None
    labels = {d.label for d in views if d.verdict == "label"}
    unsure = any(d.verdict == "uncertain" for d in views)
    if unsure:
        return ("uncertain", None) if not labels else ("disagreed", None)
    if len(labels) == 1:
        return "agreed", labels.pop()
    return "disagreed", None
