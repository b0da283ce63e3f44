"""Load: 5,000 short clips dropped at once, more bursts while a model trains, SIGTERM mid-burst.

Every file must be embedded exactly once, nothing lost, the file-event inbox bounded,
peak RSS under PEAK_RSS_BOUND_MIB (docs/operations.md), and `status` and SIGTERM
answered within seconds throughout.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from testkit.daemon_process import DaemonProcess, wait_for, write_config

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BURST = 5_000
LATER_BURST = 500
CLASSES = ("gun_shot", "clips", "dog_bark")
# The daemon's own peak; its training process is measured apart. 2.44-2.51 GiB on main
# 9d46281 (the event detector trained in the daemon, its onset features one STFT of a whole
# 14-minute soundscape); 1.40 GiB once they took a minute at a time; 545 MiB on 560acae
# (2026-12-07), the detector trained in the training process since 35a4a2b. Issue #32's bound.
PEAK_RSS_BOUND_MIB = 1_600
STATUS_ANSWER_S = 5.0
STOP_ANSWER_S = 10.0


def clip_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    samples = (0.3 * rng.standard_normal(8_000)).astype(np.float32)  # 0.5 s, distinct bytes per seed
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16_000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def drop(audio: Path, first: int, count: int) -> None:
    for i in range(first, first + count):
        label = CLASSES[i % len(CLASSES)]
        (audio / label / f"c{i:05d}.wav").write_bytes(clip_bytes(i))


def counts(models: Path) -> tuple[int, int, int, int]:
    """(rows, embedded rows, distinct paths, embedding rows) in the cache."""
    with sqlite3.connect(f"file:{models / 'embedding_cache.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        rows, embedded, paths = db.execute(
            "SELECT COUNT(*), SUM(state = 'embedded'), COUNT(DISTINCT path) FROM files").fetchone()
        embeddings = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    return rows, embedded or 0, paths, embeddings


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class Prober(threading.Thread):
    """Asks `ecosight-daemon status` every 2 s and records how long each answer took."""

    def __init__(self, config: Path) -> None:
        super().__init__(name="test-status-prober", daemon=True)
        self.config = config
        self.answers: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.daemon_up = threading.Event()  # cleared while the test has stopped the daemon

    def run(self) -> None:
        while not self.stop.wait(2.0):
            if not self.daemon_up.is_set():
                continue
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "ecosight_daemon", "--config", str(self.config),
                                     "status", "--json"], capture_output=True, text=True, timeout=60)
            if not self.daemon_up.is_set():
                continue  # stopped meanwhile: "not running" is the right answer
            self.answers.append(time.monotonic() - started)
            if result.returncode != 0:
                self.failures.append(f"exit {result.returncode}: {result.stdout[-300:]} {result.stderr[-300:]}")


def test_a_5000_file_burst_and_bursts_during_training(tmp_path: Path, yamnet_handle: str) -> None:
    write_config(tmp_path, yamnet_handle, triggers="min_new_samples = 2000",
                 training="epochs = 10\npatience = 3", watch="settle_s = 0.5")
    for label in CLASSES:
        (tmp_path / "audio" / label).mkdir(parents=True)
    daemon = DaemonProcess(tmp_path)
    prober = Prober(tmp_path / "config.toml")
    peaks: list[int] = []
    try:
        daemon.start()
        daemon.wait_idle()
        prober.daemon_up.set()
        prober.start()
        drop(daemon.audio, 0, BURST)
        wait_for(lambda: daemon.status().get("retrain_running"), 600, "the threshold retrain")
        drop(daemon.audio, BURST, LATER_BURST)  # while the model trains
        wait_for(lambda: counts(daemon.models)[1] == BURST + LATER_BURST, 600, "every file embedded")
        status = daemon.wait_idle(600)  # two retrains back to back: ~130 s + ~210 s on 2 cores (2026-12-06)
        peaks.append(status["queued_file_events_peak"])
        rows, embedded, paths, embeddings = counts(daemon.models)
        assert rows == paths == embedded == embeddings == BURST + LATER_BURST
        assert daemon.retrain_log()[0]["status"] in ("promoted", "rejected")
        assert status["queued_file_events_peak"] <= status["queued_file_events_limit"]
        rss = peak_rss_mib(daemon.proc.pid)  # type: ignore[union-attr]
        print(f"daemon peak RSS {rss:.0f} MiB, inbox peak {status['queued_file_events_peak']} file events")
        assert rss < PEAK_RSS_BOUND_MIB

        # SIGTERM in the middle of another burst: answered within seconds, nothing lost.
        total = BURST + 2 * LATER_BURST
        drop(daemon.audio, BURST + LATER_BURST, LATER_BURST)
        wait_for(lambda: daemon.status().get("state") == "embedding", 60, "embedding the last burst")
        prober.daemon_up.clear()
        started = time.monotonic()
        assert daemon.stop(timeout=60) == 0
        assert time.monotonic() - started < STOP_ANSWER_S
        daemon.kill()
        daemon.start()
        prober.daemon_up.set()
        wait_for(lambda: counts(daemon.models)[1] == total, 300, "the rest embedded after a restart")
        rows, embedded, paths, embeddings = counts(daemon.models)
        assert rows == paths == embedded == embeddings == total
        prober.daemon_up.clear()
        assert daemon.stop() == 0
    finally:
        prober.stop.set()
        daemon.kill()
        prober.join(timeout=70)
    assert prober.answers and not prober.failures, prober.failures
    print(f"status answered {len(prober.answers)} times, slowest {max(prober.answers):.2f} s")
    assert max(prober.answers) < STATUS_ANSWER_S
