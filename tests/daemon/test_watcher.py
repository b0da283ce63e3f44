"""When a changed file is due: at once when ready, else once it held still for settle_s."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ecosight_daemon.daemon.watcher import SettleTracker


def test_a_file_being_written_waits_until_it_holds_still(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"x" * 10)
    tracker = SettleTracker(settle_s=5.0)
    tracker.changed(path, now=100.0)
    assert tracker.due(102.0) == []
    path.write_bytes(b"x" * 20)  # still growing: the clock starts again
    assert tracker.due(104.0) == []
    assert tracker.due(108.0) == []
    assert tracker.due(109.5) == [path]


def test_closed_or_moved_within_the_tree_is_due_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"x")
    tracker = SettleTracker(settle_s=5.0)
    tracker.changed(path, now=0.0, ready=True)
    assert tracker.due(0.0) == [path] and len(tracker) == 0


def test_a_file_moved_in_with_an_old_mtime_needs_no_settle_wait(tmp_path: Path) -> None:
    old = tmp_path / "uploaded-yesterday.wav"
    old.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / "being-written.wav"
    fresh.write_bytes(b"x")
    tracker = SettleTracker(settle_s=5.0)
    tracker.changed(old, now=0.0)
    tracker.changed(fresh, now=0.0)
    assert tracker.due(0.0) == [old]


def test_ignored_names_are_never_due(tmp_path: Path) -> None:
    tracker = SettleTracker(settle_s=0.0)
    tracker.changed(tmp_path / "x.wav.part", now=0.0, ready=True)
    assert tracker.due(1.0) == []
