"""Folder trees that used to stop the daemon: one thousands of folders deep (it killed the
file watcher silently), and thousands of folders moved in at once (a rescan each)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.daemon_process import DaemonProcess, idle_daemon, wait_for, write_config
from tests.ingest.test_deep_trees import DEEP, make_chain, remove_tree
from tests.reliability.test_bad_input import wav_bytes

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture
def daemon(tmp_path: Path, yamnet_handle: str) -> Iterator[DaemonProcess]:
    (tmp_path / "audio" / "clips").mkdir(parents=True)
    (tmp_path / "audio" / "clips" / "first.wav").write_bytes(wav_bytes(seed=1))
    try:
        with idle_daemon(tmp_path, yamnet_handle, watch="poll_interval_s = 2.0") as process:
            yield process
    finally:
        for child in list((tmp_path / "audio" / "clips").iterdir()):
            if child.is_dir():
                remove_tree(child)


def test_a_very_deep_tree_neither_crashes_nor_silently_stops_the_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    make_chain(tmp_path / "outside", DEEP, file_every=400)
    os.rename(tmp_path / "outside", daemon.audio / "clips" / "deep")
    wait_for(lambda: daemon.status().get("watcher") == "rescans", 60, "the daemon to notice its dead watcher")
    assert "RecursionError" in daemon.status()["watcher_problem"]
    # New files are still found (by rescans now), and the status says why it is slower.
    (daemon.audio / "clips" / "after.wav").write_bytes(wav_bytes(seed=2))
    daemon.wait_embedded("clips/after.wav", timeout=30)
    embedded = daemon.embedded_paths()
    assert "clips/deep/a/a/a/a/a/a/a/clip400.wav" not in embedded  # 400 levels down: ignored, logged
    assert daemon.log_text().count("levels below a class folder") == 1
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_thousands_of_folders_at_once_make_one_rescan_and_the_daemon_keeps_answering(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    storm = tmp_path / "storm"
    storm.mkdir()
    for i in range(3_000):
        (storm / f"f{i:04d}").mkdir()
    for i in range(0, 3_000, 100):
        (storm / f"f{i:04d}" / "clip.wav").write_bytes(wav_bytes(seed=10 + i))
    before = daemon.status()["rescans"]
    for folder in sorted(storm.iterdir()):
        os.rename(folder, daemon.audio / "clips" / folder.name)  # 3,000 folder events
    started = time.monotonic()
    worst = 0.0
    while time.monotonic() - started < 20:  # the status file is rewritten every 2 s while the loop turns
        age = time.time() - os.stat(daemon.models / "daemon_status.json").st_mtime
        worst = max(worst, age)
        if all(daemon.embedded_paths().get(f"clips/f{i:04d}/clip.wav") == "embedded" for i in range(0, 3_000, 100)):
            break
        time.sleep(0.2)
    assert all(daemon.embedded_paths().get(f"clips/f{i:04d}/clip.wav") == "embedded" for i in range(0, 3_000, 100))
    assert worst < 5.0, f"the loop stalled: status file {worst:.1f} s old"
    wait_for(lambda: daemon.status().get("rescans", 0) > before, 10, "the storm's rescan")
    settled = wait_for(lambda: (s := daemon.status()).get("queued_file_events") == 0
                       and not s.get("folder_rescan_scheduled") and s, 30, "the storm's events all handled")
    rescans = settled["rescans"] - before
    assert 1 <= rescans <= 5, f"{rescans} rescans for one storm"
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0


def test_hundreds_of_folders_over_a_14000_file_index_keep_the_loop_answering(
    tmp_path: Path, yamnet_handle: str
) -> None:
    """The same storm where every rescan walks and compares 14,000 indexed files."""
    from benchmarks.daemon_scale import indexed_corpus

    indexed_corpus(tmp_path)  # 14,000 tiny WAVs, each already embedded in the cache
    write_config(tmp_path, yamnet_handle, triggers="min_new_samples = 100000")
    daemon = DaemonProcess(tmp_path).start()
    try:
        daemon.wait_idle(180)
        before = daemon.status()["rescans"]
        storm = tmp_path / "storm"
        storm.mkdir()
        for i in range(300):
            (storm / f"f{i:03d}").mkdir()
            (storm / f"f{i:03d}" / "clip.wav").write_bytes(wav_bytes(seed=1_000 + i))
        for folder in sorted(storm.iterdir()):
            os.rename(folder, daemon.audio / "clips" / folder.name)
        started, worst = time.monotonic(), 0.0
        while time.monotonic() - started < 60:
            worst = max(worst, time.time() - os.stat(daemon.models / "daemon_status.json").st_mtime)
            if daemon.status().get("pending") == 0 and daemon.status().get("rescans", 0) > before:
                break
            time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        stop_started = time.monotonic()
        assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0
        assert time.monotonic() - stop_started < 30
        states = daemon.embedded_paths()
        assert all(states.get(f"clips/f{i:03d}/clip.wav") == "embedded" for i in range(300))
        assert worst < 5.0, f"the loop stalled: status file {worst:.1f} s old"
    finally:
        daemon.kill()


def test_a_very_deep_tree_at_start_up_gives_rescans_not_a_crash_loop(tmp_path: Path, yamnet_handle: str) -> None:
    """Watchdog's inotify start-up walks the tree by recursion in the starting thread: the
    daemon used to exit 1 with RecursionError at every start (systemd restarting it for ever)."""
    (tmp_path / "audio" / "clips").mkdir(parents=True)
    (tmp_path / "audio" / "clips" / "first.wav").write_bytes(wav_bytes(seed=1))
    make_chain(tmp_path / "audio" / "clips" / "deep", DEEP)
    try:
        for _ in range(2):  # a restart finds the same tree
            with idle_daemon(tmp_path, yamnet_handle, watch="poll_interval_s = 2.0") as process:
                assert process.status()["watcher"] == "rescans"
                assert "RecursionError" in process.status()["watcher_problem"]
                daemon_log = process.log_text()
                (process.audio / "clips" / f"later{_}.wav").write_bytes(wav_bytes(seed=5 + _))
                process.wait_embedded(f"clips/later{_}.wav", timeout=30)  # found by rescans
                assert process.proc is not None and process.proc.poll() is None
        assert "Traceback" not in daemon_log
    finally:
        remove_tree(tmp_path / "audio" / "clips" / "deep")


def test_polling_does_not_follow_links_back_up_the_tree(tmp_path: Path, yamnet_handle: str) -> None:
    """With [watch] polling = true, two links to ".." made watchdog's snapshot walk for ever:
    the daemon never left `starting`, its memory growing ~35 MB/s."""
    clips = tmp_path / "audio" / "clips"
    clips.mkdir(parents=True)
    (clips / "first.wav").write_bytes(wav_bytes(seed=1))
    (clips / "up").symlink_to("..")
    (clips / "up2").symlink_to("../..")
    with idle_daemon(tmp_path, yamnet_handle, watch="polling = true\npoll_interval_s = 1.0") as process:
        process.wait_embedded("clips/first.wav")
        (clips / "later.wav").write_bytes(wav_bytes(seed=2))
        process.wait_embedded("clips/later.wav", timeout=30)  # the polling watcher sees it
        assert process.status()["watcher"] == "watching"
        assert process.embedded_paths().get("clips/up") is None  # a link: never followed, never a file
        assert process.proc is not None and process.proc.poll() is None
