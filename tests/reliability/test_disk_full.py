"""Disk full: models_dir and the cache on a small tmpfs the test mounts (root only).

A failed write must leave the previous state intact; the daemon logs it, keeps
running and catches up once space is back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.audio_files import WavWriter
from testkit.daemon_process import DaemonProcess, wait_for, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TMPFS_SIZE = "176m"  # room for the cache, the ONNX body (15 MB) and two versions with their exports (49 MB each,
# 2.5 MB of it the event detector for devices; 47 MB before it)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    models = tmp_path / "models"
    models.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; this run is not root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(models)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); disk-full behavior untested")
    try:
        yield models
    finally:
        subprocess.run(["umount", "-l", str(models)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem is full (unbuffered, down to single bytes)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def published(models: Path) -> dict[str, str]:
    names = ("yamnet_classifier_v2.keras", "model_metadata.json", "class_names.json", "performance_metrics.json")
    return {name: hashlib.sha256((models / name).read_bytes()).hexdigest() for name in names}


def file_states(models: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{models / 'embedding_cache.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        return dict(db.execute("SELECT path, state FROM files"))


def test_a_full_disk_keeps_the_previous_state_and_recovers(
    small_disk: Path, tmp_path: Path, yamnet_handle: str, write_wav: WavWriter
) -> None:
    write_config(tmp_path, yamnet_handle, training="epochs = 10")
    for i in range(4):
        write_wav(tmp_path / "audio" / "gun_shot" / f"shot{i}.wav", "clicks", seed=i)
        write_wav(tmp_path / "audio" / "clips" / f"tone{i}.wav", "tone", seed=i)
    daemon = DaemonProcess(tmp_path)
    try:
        daemon.start()
        daemon.wait_idle()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.retrain_log(), 120, "the first model")
        daemon.wait_idle()
        models_before, log_before = published(small_disk), daemon.retrain_log()
        states_before = file_states(small_disk)

        filler = fill(small_disk)
        for i in range(3):
            write_wav(tmp_path / "audio" / "clips" / f"late{i}.wav", "tone", seed=50 + i)
        wait_for(lambda: "cannot write under" in daemon.log_text(), 60, "the disk-full error in the log")
        daemon.signal(signal.SIGHUP)  # a retrain with no space to write its version
        wait_for(lambda: re.search(r"retrain \(SIGHUP\) (failed|promoted|rejected)", daemon.log_text()), 120,
                 "the retrain on a full disk to end")
        assert daemon.proc.poll() is None, daemon.log_text()[-3000:]  # type: ignore[union-attr]
        assert published(small_disk) == models_before
        assert json.loads((small_disk / "retraining_log.json").read_text())[:len(log_before)] == log_before
        assert {p: s for p, s in file_states(small_disk).items() if p in states_before} == states_before
        with sqlite3.connect(small_disk / "embedding_cache.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        filler.unlink()  # space is back
        for i in range(3):
            daemon.wait_embedded(f"clips/late{i}.wav", timeout=60)
        assert "writing works again" in daemon.log_text()
        attempts = len(daemon.retrain_log())
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(daemon.retrain_log()) > attempts, 120, "a retrain after recovery")
        assert daemon.retrain_log()[-1]["status"] in ("promoted", "rejected"), daemon.retrain_log()[-1]["reason"]
        daemon.wait_idle()
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_a_retrain_that_runs_out_of_space_changes_nothing(
    small_disk: Path, tmp_path: Path, yamnet_handle: str, write_wav: WavWriter
) -> None:
    write_config(tmp_path, yamnet_handle, training="epochs = 10")
    for i in range(4):
        write_wav(tmp_path / "audio" / "gun_shot" / f"shot{i}.wav", "clicks", seed=i)
        write_wav(tmp_path / "audio" / "clips" / f"tone{i}.wav", "tone", seed=i)
    command = [sys.executable, "-m", "ecosight_daemon", "--config", str(tmp_path / "config.toml"), "retrain",
               "--force"]
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    models_before, log_before = published(small_disk), json.loads((small_disk / "retraining_log.json").read_text())

    filler = fill(small_disk)
    full = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert full.returncode != 0 and "free on its disk" in full.stderr, full.stderr[-3000:]
    assert "Recover with" not in full.stderr  # a full disk is no reason to drop the cache

    os.truncate(filler, filler.stat().st_size - 160 * 1024)  # room to open the cache, not for a version
    failed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 4, failed.stderr[-3000:]
    assert "No space left on device" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr.split("ERROR ecosight_daemon.versions.retrain: retrain (manual) failed")[-1]
    assert published(small_disk) == models_before
    log = json.loads((small_disk / "retraining_log.json").read_text())
    assert log[:len(log_before)] == log_before  # the failed attempt may be recorded once its space is freed
    assert all(entry["status"] == "failed" for entry in log[len(log_before):])
    assert not list((small_disk / "versions").glob(".staging-*"))

    filler.unlink()
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    log = json.loads((small_disk / "retraining_log.json").read_text())
    assert log[:len(log_before)] == log_before and log[-1]["status"] == "promoted"
