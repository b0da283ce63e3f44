"""A real daemon process, real signals, real files; every wait polls something observable."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from testkit.audio_files import WavWriter, synthetic_signal
from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon_root(tmp_path: Path, yamnet_handle: str) -> Path:
    for label in ("gun_shot", "clips"):
        (tmp_path / "audio" / label).mkdir(parents=True)
    write_config(tmp_path, yamnet_handle)
    return tmp_path


@pytest.fixture
def daemon(daemon_root: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(daemon_root)
    yield process
    process.kill()


def seed_corpus(root: Path, write_wav: WavWriter, per_class: int = 6) -> None:
    for i in range(per_class):
        write_wav(root / "audio" / "gun_shot" / f"shot{i}.wav", "clicks", seconds=1.5, seed=i)
        write_wav(root / "audio" / "clips" / f"tone{i}.wav", "tone", seconds=1.5, seed=i)


def test_ready_status_and_files_dropped_while_running_or_stopped(
    daemon: DaemonProcess, write_wav: WavWriter, tmp_path: Path
) -> None:
    write_wav(daemon.audio / "gun_shot" / "before.wav", "clicks", seed=1)  # dropped while stopped
    daemon.start()
    assert any(n.startswith("STATUS=") for n in daemon.notifications)
    daemon.wait_embedded("gun_shot/before.wav")
    status = daemon.wait_idle()
    assert status["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert {"state", "pid", "new_samples", "min_new_samples", "model_version"} <= set(status)
    assert status["min_new_samples"] == 1000 and status["model_version"] is None and status["model_detector"] is None

    write_wav(daemon.audio / "clips" / "dropped.wav", "tone", seed=2)
    daemon.wait_embedded("clips/dropped.wav")
    outside = write_wav(tmp_path / "elsewhere" / "moved.wav", "noise", seed=3)
    os.rename(outside, daemon.audio / "clips" / "moved.wav")
    daemon.wait_embedded("clips/moved.wav")
    (daemon.audio / "new_class").mkdir()
    write_wav(daemon.audio / "new_class" / "first.wav", "noise", seed=4)
    daemon.wait_embedded("new_class/first.wav")
    wait_for(lambda: "new_class" in daemon.status().get("classes", {}), 10, "new class in status")
    (daemon.audio / "clips" / "dropped.wav").unlink()
    wait_for(lambda: "clips/dropped.wav" not in daemon.embedded_paths(), 10, "deleted file forgotten")

    cli = subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(daemon.root / "config.toml"),
                          "status", "--json"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and json.loads(cli.stdout)["running"] is True
    assert daemon.stop() == 0
    assert daemon.received("STOPPING=1")
    cli = subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(daemon.root / "config.toml"),
                          "status"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 3 and "not running" in cli.stdout


def test_file_written_slowly_in_chunks_is_embedded_once_when_complete(
    daemon: DaemonProcess, daemon_root: Path
) -> None:
    daemon.start()
    daemon.wait_idle()
    samples = (synthetic_signal("noise", 3.0, 16_000, seed=9) * 32767).astype(np.int16)
    target = daemon.audio / "clips" / "slow.wav"
    with soundfile.SoundFile(target, "w", 16_000, 1, subtype="PCM_16") as sound:
        for chunk in np.array_split(samples, 6):
            sound.write(chunk)
            sound.flush()
            # Each pause well inside settle_s (0.5 s), the whole write (1.5 s) well beyond it: at 0.4 s
            # a loaded machine's scheduling delay settled the file half-written once (stop 48).
            time.sleep(0.25)
    daemon.wait_embedded("clips/slow.wav")
    daemon.wait_idle()
    assert daemon.embedding_rows() == 1
    with sqlite3.connect(daemon.models / "embedding_cache.sqlite3") as db:
        patches = db.execute("SELECT patches FROM embeddings").fetchone()[0]
    assert patches == 1 + -(-(48_000 - 15_600) // 7_680)  # the whole 3 s, not a partial write


def test_threshold_triggers_one_retrain_and_at_most_one_more(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter, yamnet_handle: str
) -> None:
    write_config(daemon_root, yamnet_handle, triggers="min_new_samples = 12")
    daemon.start()
    seed_corpus(daemon_root, write_wav, per_class=6)  # 12 new samples
    wait_for(lambda: daemon.status().get("retrain_running"), 60, "threshold retrain to start")
    for i in range(3):  # dropped during training: fewer than the threshold
        write_wav(daemon.audio / "clips" / f"during{i}.wav", "noise", seed=50 + i)
    wait_for(lambda: len(daemon.retrain_log()) >= 1, 180, "first retrain to finish")
    daemon.wait_idle(timeout=180)
    log = daemon.retrain_log()
    assert len(log) == 1
    assert log[0]["trigger_reason"].startswith("threshold: 12 new samples >= 12")
    assert log[0]["status"] == "promoted"
    assert daemon.status()["new_samples"] == 3
    assert daemon.stop() == 0


def test_sighup_burst_yields_at_most_two_runs_with_the_reason_recorded(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter
) -> None:
    seed_corpus(daemon_root, write_wav)
    daemon.start()
    daemon.wait_idle()
    for _ in range(4):
        daemon.signal(signal.SIGHUP)
        time.sleep(0.05)
    asked = subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(daemon_root / "config.toml"),
                            "retrain"], capture_output=True, text=True, timeout=60)  # the fifth, by the CLI
    assert asked.returncode == 0 and "asked the running daemon" in asked.stdout
    wait_for(lambda: len(daemon.retrain_log()) >= 1, 180, "a retrain after SIGHUP")
    daemon.wait_idle(timeout=240)
    log = daemon.retrain_log()
    assert 1 <= len(log) <= 2
    assert all(entry["trigger_reason"] == "SIGHUP" for entry in log)
    assert daemon.stop() == 0


def test_schedule_triggers_retrains_that_never_overlap(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter, yamnet_handle: str
) -> None:
    write_config(daemon_root, yamnet_handle, triggers='schedule = "*/3 * * * * *"')
    seed_corpus(daemon_root, write_wav)
    daemon.start()
    assert daemon.status().get("next_scheduled_run") or wait_for(
        lambda: daemon.status().get("next_scheduled_run"), 10, "next scheduled run in status")
    wait_for(lambda: len(daemon.retrain_log()) >= 2, 300, "two scheduled retrains")
    assert daemon.stop() == 0
    runs = sorted((e["started_at"], e["started_at"] + e["duration_s"]) for e in daemon.retrain_log())
    assert all(e["trigger_reason"] == "schedule" for e in daemon.retrain_log())
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end - 0.01


def test_sigterm_during_embedding_and_training_exits_cleanly_and_restart_carries_on(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter
) -> None:
    for i in range(60):  # 30 s each: more than a second of embedding, however fast the runtime
        write_wav(daemon.audio / "clips" / f"bulk{i}.wav", "noise", seconds=30.0, seed=i)
    daemon.start()
    wait_for(lambda: daemon.status().get("state") == "embedding", 60, "embedding state")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 30
    with sqlite3.connect(daemon.models / "embedding_cache.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done_before = sum(state == "embedded" for state in daemon.embedded_paths().values())
    assert done_before < 60

    seed_corpus(daemon_root, write_wav)
    daemon.kill()
    daemon.start()
    daemon.wait_idle(timeout=120)
    assert sum(state == "embedded" for state in daemon.embedded_paths().values()) == 72

    for attempt, stage in enumerate(("training", "detector_training"), start=1):  # the fit, then the detector's
        daemon.kill()
        pause_file = daemon_root / f"paused-{stage}.pid"
        daemon.extra_env = {"ECOSIGHT_PAUSE_AT": stage, "ECOSIGHT_PAUSE_FILE": str(pause_file)}
        daemon.start()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda p=pause_file: p.exists() and p.read_text(), 300, f"the training process at {stage}")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 30
        log = daemon.retrain_log()
        assert len(log) == attempt and log[-1]["status"] == "failed", log
        assert "stopped on request" in log[-1]["reason"], log[-1]
        assert not list((daemon.models / "versions").glob(".staging-*"))
        assert not (daemon.models / "yamnet_classifier_v2.keras").exists()

    daemon.kill()
    daemon.extra_env = {}
    daemon.start()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: any(e["status"] == "promoted" for e in daemon.retrain_log()), 180, "a promoted retrain")
    assert (daemon.models / "yamnet_classifier_v2.keras").is_file()
    assert daemon.stop() == 0


def test_polling_observer_picks_up_files(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter, yamnet_handle: str
) -> None:
    write_config(daemon_root, yamnet_handle, watch="polling = true\npoll_interval_s = 0.5")
    daemon.start()
    daemon.wait_idle()
    write_wav(daemon.audio / "clips" / "polled.wav", "tone", seed=3)
    daemon.wait_embedded("clips/polled.wav")
    assert daemon.stop() == 0


def test_a_second_stop_signal_exits_at_once(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter
) -> None:
    seed_corpus(daemon_root, write_wav)
    daemon.start()
    daemon.wait_idle()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.status().get("state") == "training", 60, "training state")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    wait_for(lambda: "stopping (SIGTERM)" in daemon.log_text(), 10, "the first SIGTERM handled")
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 128 + signal.SIGTERM  # type: ignore[union-attr]
    assert time.monotonic() - started < 10
    with sqlite3.connect(daemon.models / "embedding_cache.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_invalid_config_on_sighup_keeps_the_old_one(
    daemon: DaemonProcess, daemon_root: Path, write_wav: WavWriter
) -> None:
    daemon.start()
    daemon.wait_idle()
    (daemon_root / "config.toml").write_text((daemon_root / "config.toml").read_text() + "\n[bogus]\nx = 1\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.retrain_log()) >= 1, 60, "the SIGHUP retrain attempt")
    assert daemon.proc.poll() is None  # type: ignore[union-attr]
    write_wav(daemon.audio / "clips" / "after.wav", seed=5)
    daemon.wait_embedded("clips/after.wav")
    assert daemon.stop() == 0


def test_one_daemon_per_models_dir_and_clis_defer_to_it(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.wait_idle()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(daemon.root / "config.toml"),
                               *args], capture_output=True, text=True, timeout=120)

    second = cli("run")
    assert second.returncode == 73, second.stderr[-2000:]
    assert "a daemon already runs with models_dir" in second.stderr and f"pid {daemon.proc.pid}" in second.stderr  # type: ignore[union-attr]
    embed = cli("embed")
    assert embed.returncode == 73 and "embeds new files itself" in embed.stderr
    rollback = cli("rollback")
    assert rollback.returncode == 73 and "Stop the daemon" in rollback.stderr
    assert cli("scan", "--json").returncode == 0  # shows the daemon's index without writing to it
    assert daemon.stop() == 0
    # A status file naming a live pid that holds no lock (here: this test) is not signalled.
    status = json.loads((daemon.models / "daemon_status.json").read_text())
    (daemon.models / "daemon_status.json").write_text(json.dumps({**status, "state": "idle", "pid": os.getpid(),
                                                                   "updated_at": time.time()}))
    received: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
    try:
        result = cli("retrain", "--json")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert received == [] and "daemon_pid" not in result.stdout


def test_bad_config_exits_78_before_starting(daemon_root: Path) -> None:
    (daemon_root / "config.toml").write_text("[triggers]\nmin_new_samples = 0\n")
    result = subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config",
                             str(daemon_root / "config.toml"), "run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "triggers.min_new_samples" in result.stderr


def test_unit_file(tmp_path: Path) -> None:
    unit = REPO_ROOT / "systemd" / "ecosight-daemon.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"].split() == ["73", "78"]
    assert int(service["WatchdogSec"]) > 0 and service["ExecStart"].endswith("ecosight-daemon run")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == "yes"
    assert service["ProtectSystem"] == "strict" and service["User"] not in ("", "root")
    assert "TFHUB_CACHE_DIR=/var/lib" in service["Environment"] or "TFHUB_CACHE_DIR=/var/lib" in unit.read_text()
    assert service["ReadWritePaths"]
    if shutil.which("systemd-analyze"):
        # verify checks that ExecStart exists: point it at this checkout's console script.
        script = Path(sys.executable).with_name("ecosight-daemon")
        copy = tmp_path / "ecosight-daemon.service"
        copy.write_text(unit.read_text().replace("/opt/ecosight-daemon/.venv/bin/ecosight-daemon", str(script)))
        result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(copy)],
                                  capture_output=True, text=True)
        exposure = float(security.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert exposure <= 2.0, security.stdout[-3000:]
