"""Trees nobody should make but anyone can: thousands of folders deep, under a class folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecosight_daemon.daemon.watcher import FileEvent, SupervisedWatcher
from ecosight_daemon.ingest.naming import MAX_FOLDER_DEPTH, walk_audio_dir
from testkit.daemon_process import wait_for

DEEP = 1_200  # deeper than Python's default recursion limit of 1,000


def make_chain(top: Path, depth: int, file_every: int = 0) -> None:
    """top/a/a/a/... `depth` levels, made without recursion (os.makedirs recurses)."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for level in range(1, depth + 1):
            os.mkdir("a", dir_fd=fd)
            child = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
            if file_every and level % file_every == 0:
                with open(os.open(f"clip{level}.wav", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as handle:
                    handle.write(b"RIFF")
    finally:
        os.close(fd)


def remove_tree(top: Path) -> None:
    """Delete a tree of any depth (shutil.rmtree, and pytest's clean-up, recurse)."""
    stack = [top]
    while stack:
        folder = stack[-1]
        subfolders = [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
        if subfolders:
            stack.extend(Path(p) for p in subfolders)
            continue
        for entry in os.scandir(folder):
            os.unlink(entry.path)
        os.rmdir(folder)
        stack.pop()


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for child in list(tmp_path.iterdir()):
        remove_tree(child) if child.is_dir() else child.unlink()


def test_walk_survives_a_very_deep_tree_and_stops_at_the_depth_limit(
    deep_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = deep_root / "audio"
    make_chain(audio / "clips" / "deep", DEEP, file_every=1)
    (audio / "gun_shot").mkdir()
    (audio / "gun_shot" / "shot.wav").write_bytes(b"RIFF")
    with caplog.at_level(logging.WARNING):
        found = [f.relpath for f in walk_audio_dir(audio, (".wav",))]
        again = [f.relpath for f in walk_audio_dir(audio, (".wav",))]
    assert found == again
    assert "gun_shot/shot.wav" in found
    depths = sorted(len(p.split("/")) - 2 for p in found if p.startswith("clips/"))  # folders below the class
    assert depths == list(range(2, MAX_FOLDER_DEPTH + 1))  # clips/deep/a/clip1.wav is 2 below clips/
    warnings = [r.getMessage() for r in caplog.records if "levels below a class folder" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per rescan


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the deaths it tests
def test_a_watcher_killed_by_a_deep_tree_is_noticed_replaced_by_rescans_and_recovers(deep_root: Path) -> None:
    from ecosight_daemon.daemon.watcher import RESTART_WINDOW_S

    audio = deep_root / "audio"
    (audio / "clips").mkdir(parents=True)
    events: list[FileEvent] = []
    now = [1000.0]
    watcher = SupervisedWatcher(audio, events.append, polling=False, poll_interval_s=5.0, clock=lambda: now[0])
    watcher.start()
    try:
        assert watcher.alive() and not watcher.check(now[0])
        # watchdog walks a moved-in tree by recursion in its own threads: this kills them.
        make_chain(deep_root / "outside", DEEP)
        os.rename(deep_root / "outside", audio / "clips" / "deep")
        wait_for(lambda: not watcher.alive(), 20, "the deep tree to kill the watcher")
        assert watcher.check(now[0]), "a dead watcher must ask for a rescan"
        # Restarted, it walks the same tree again and dies again: rescans take over.
        wait_for(lambda: not watcher.alive() and (watcher.check(now[0]) or True) and watcher.mode == "rescans",
                 20, "a watcher that keeps dying to give way to rescans")
        assert "RecursionError" in (watcher.problem or ""), watcher.problem
        assert not watcher.check(now[0] + 1)  # a rescan every poll_interval_s, not every loop turn
        assert watcher.check(now[0] + 6)

        deep = audio / "clips" / "deep"  # the operator removes the tree; the watcher is tried again later
        os.rename(deep, deep_root / "removed")
        assert watcher.check(now[0] + RESTART_WINDOW_S + 1)
        assert watcher.mode == "watching" and watcher.alive() and watcher.problem is None
        (audio / "clips" / "after.wav").write_bytes(b"RIFF")
        wait_for(lambda: any(e.path.endswith("after.wav") for e in events), 20, "events after the restart")
    finally:
        watcher.stop(5)


def test_an_inotify_queue_overflow_asks_for_one_rescan(deep_root: Path) -> None:
    """watchdog only logs an overflow; the watcher turns each such log line into a rescan
    request (the daemon merges them). The record is the one watchdog 7 emits."""
    audio = deep_root / "audio"
    audio.mkdir()
    events: list[FileEvent] = []
    watcher = SupervisedWatcher(audio, events.append, polling=False, poll_interval_s=5.0, clock=time.monotonic)
    watcher.start()
    try:
        overflow = "Inotify queue overflowed; filesystem events were lost"
        logging.getLogger("watchdog.observers.inotify_c").warning(overflow)
        logging.getLogger("watchdog.observers.inotify").info("unrelated")
        assert [(e.path, e.rescan) for e in events] == [(str(audio), True)]
    finally:
        watcher.stop(5)
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    assert len(events) == 1  # a stopped watcher asks for nothing
