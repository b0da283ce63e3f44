"""The one settled-file rule both watched folders follow."""

from __future__ import annotations

import time

from ecosight_daemon.util.settling import Settling


def test_a_fresh_file_settles_once_it_held_still_and_a_change_restarts_the_wait() -> None:
    settling: Settling[str] = Settling(5.0)
    fresh = time.time_ns()
    assert not settling.observe("a.wav", 100, fresh, now=0.0)
    assert not settling.observe("a.wav", 100, fresh, now=4.0)
    assert not settling.observe("a.wav", 200, fresh + 1, now=4.5)  # still being written
    assert settling.unchanged_for("a.wav", 6.0) == 1.5
    assert not settling.observe("a.wav", 200, fresh + 1, now=9.0)
    assert settling.observe("a.wav", 200, fresh + 1, now=9.5)
    assert len(settling) == 1 and list(settling) == ["a.wav"]
    settling.forget("a.wav")
    assert len(settling) == 0


def test_a_file_moved_in_with_an_old_mtime_settles_at_first_sight() -> None:
    settling: Settling[str] = Settling(5.0)
    old = time.time_ns() - 60 * 10**9
    assert settling.observe("moved.wav", 100, old, now=0.0)
