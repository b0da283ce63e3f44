"""Recordings that used to stop the daemon, against the real daemon and its recordings folder.

On be16e0d: a recording whose clock said year 9999 raised OverflowError out of the loop (exit
1 about 1.5 s after each start: a crash loop); the 3 KB WAV that makes libsndfile loop forever
(../shared/data/specimens) spun the loop in C (no /health, no SIGTERM, the next start hung on
it too); 62 s of 8-channel 384 kHz audio took the daemon from 308 to 1,187 MiB; a header that
says 10 Hz was accepted as 55.6 h of audio; a stored row with an absurd clock failed the status.
Here each one is a reason on its recording while the daemon answers /health, analyses the
good recording, keeps its memory bounded, restarts cleanly, and stops on SIGTERM in time.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from testkit.daemon_process import DaemonProcess, wait_for, write_config
from testkit.paths import hanging_wav
from tests.reliability.test_load import peak_rss_mib

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RSS_BOUND_MIB = 1_600
READ_BUDGET_S = 8


class HealthProbe(threading.Thread):
    """GET /health every 0.5 s; keeps the slowest answer and any failure."""

    def __init__(self, url: str) -> None:
        super().__init__(name="test-health-probe", daemon=True)
        self.url, self.slowest, self.failures, self.answers = url + "health", 0.0, [], 0
        self.running = True

    def run(self) -> None:
        while self.running:
            asked = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    answer.read()
                self.answers += 1
            except OSError as exc:
                self.failures.append(str(exc))
            self.slowest = max(self.slowest, time.monotonic() - asked)
            time.sleep(0.5)


def noise(seconds: float, rate: int = 16_000, channels: int = 1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)


def with_guano(path: Path, timestamp: str) -> Path:
    body = f"GUANO|Version: 1.0\nTimestamp: {timestamp}\n".encode()
    body += b" " * (len(body) % 2)
    data = bytearray(path.read_bytes()) + b"guan" + struct.pack("<I", len(body)) + body
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))
    return path


def states(root: Path) -> dict[str, tuple[str, str | None, str | None]]:
    with sqlite3.connect(root / "models" / "embedding_cache.sqlite3") as db:
        return {path: (state, reason, source) for path, state, reason, source in
                db.execute("SELECT path, state, reason, clock_source FROM recordings")}


def test_bad_recordings_fail_with_reasons_while_the_daemon_answers_and_restarts(
        tmp_path: Path, yamnet_handle: str) -> None:
    specimen = hanging_wav()
    assert specimen.is_file(), f"{specimen} missing (../shared/data/specimens)"
    write_config(tmp_path, yamnet_handle, audio=f"max_decode_s = {READ_BUDGET_S}", watch="settle_s = 0.3",
                 detection='recordings_dir = "recordings"\nscan_interval_s = 0.3\nincomplete_settle_s = 1.0\n'
                           'timezone = "America/New_York"')  # where 9999-12-31 23:59:59 leaves the calendar in UTC
    card = tmp_path / "card"
    card.mkdir()
    # An absurd clock in each of its homes (a name read in a zone where it overflows, GUANO, the comment).
    soundfile.write(card / "AM01_99991231_235959.WAV", noise(20), 16_000, subtype="PCM_16")
    soundfile.write(card / "guano_year_9999.wav", noise(20, seed=2), 16_000, subtype="PCM_16")
    with_guano(card / "guano_year_9999.wav", "9999-12-31T23:59:59-05:00")
    with soundfile.SoundFile(card / "comment_year_1.wav", "w", 16_000, 1, "PCM_16") as sound:
        sound.comment = "Recorded at 00:00:00 01/01/0001 (UTC+1) by AudioMoth 24A04F085FDF5B2B"
        sound.write(noise(20, seed=3))
    soundfile.write(card / "AM02_20260501_060000.WAV", noise(130, seed=4), 16_000, subtype="PCM_16")  # good
    soundfile.write(card / "ten_hz.wav", noise(2_000, rate=10, seed=5), 10, subtype="PCM_16")
    soundfile.write(card / "bat_array.wav", noise(62, rate=384_000, channels=8, seed=6), 384_000, subtype="PCM_16")
    shutil.copyfile(specimen, card / "hangs_libsndfile.wav")

    daemon = DaemonProcess(tmp_path)
    try:
        daemon.start()
        probe = HealthProbe(daemon.http_url)
        probe.start()
        recordings = tmp_path / "recordings"
        for path in sorted(card.iterdir()):
            shutil.copyfile(path, recordings / path.name)
        expected = {path.name for path in card.iterdir()}
        wait_for(lambda: {p for p, (s, _, _) in states(tmp_path).items() if s in ("done", "failed")} == expected,
                 240, "every recording done or failed")
        found = states(tmp_path)
        for name in ("AM01_99991231_235959.WAV", "guano_year_9999.wav", "comment_year_1.wav"):
            assert found[name][0] == "done" and found[name][2] == "invalid", (name, found[name])
        assert found["AM02_20260501_060000.WAV"][:1] + found["AM02_20260501_060000.WAV"][2:] == ("done", "file_name")
        assert found["bat_array.wav"][0] == "done", found["bat_array.wav"]
        assert found["ten_hz.wav"][0] == "failed" and "min_sample_rate" in (found["ten_hz.wav"][1] or "")
        state, reason, _ = found["hangs_libsndfile.wav"]
        assert state == "failed" and f"took longer than {READ_BUDGET_S} s" in (reason or ""), reason
        assert "implausible" in daemon.log_text() or "cannot be converted" in daemon.log_text()
        status = wait_for(lambda: (s := daemon.status().get("recordings") or {}).get("clock_problems") and s, 30,
                          "the clock problems in the status")
        assert {p["recording"] for p in status["clock_problems"]} >= {"guano_year_9999.wav", "comment_year_1.wav"}
        peak = peak_rss_mib(daemon.pid)
        assert peak < RSS_BOUND_MIB
        probe.running = False
        probe.join()
        assert probe.failures == [] and probe.answers > 10 and probe.slowest < 5, (probe.failures, probe.slowest)
        assert daemon.stop(timeout=30) == 0

        # A row an older version stored with an absurd clock, and a detection on it: the status is still built.
        with sqlite3.connect(tmp_path / "models" / "embedding_cache.sqlite3") as db:
            db.execute("UPDATE recordings SET start_utc = '9999-12-31T23:59:59+00:00' "
                       "WHERE path = 'AM02_20260501_060000.WAV'")
            db.execute("INSERT INTO detections (path, label, start_s, end_s, peak_s, score, model_version, found_at) "
                       "VALUES ('AM02_20260501_060000.WAV', 'gun_shot', 100000.0, 100001.0, 100000.5, 0.9, 'v0001', 0)")
        daemon.start()
        wait_for(lambda: daemon.status().get("state") == "idle", 120, "the restarted daemon idle")
        recent = wait_for(lambda: (daemon.status().get("recordings") or {}).get("recent"), 30, "the stored detection")
        assert recent[0]["clock_time"] is None
        hanging = tmp_path / "recordings" / "hangs_again.wav"
        shutil.copyfile(specimen, hanging)  # stop the daemon while the reader hangs on it
        wait_for(lambda: (daemon.status().get("recordings") or {}).get("current"), 30, "the reader busy with it")
        asked = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        stop_took = time.monotonic() - asked
        assert stop_took < 10
    finally:
        daemon.kill()
    print(f"bad recordings: daemon peak RSS {peak:.0f} MiB, slowest /health {probe.slowest:.2f} s over "
          f"{probe.answers} answers, SIGTERM with the reader hung obeyed in {stop_took:.1f} s")


FLOOD = 10_050  # more than a scan looks at (daemon/recordings_folder.py MAX_SCAN_FILES)


def test_a_flooded_subfolder_neither_forgets_analysed_recordings_nor_starves_new_ones(
        tmp_path: Path, yamnet_handle: str) -> None:
    """On be16e0d 10,000 files copied into a sub-folder that sorts first stopped the scan at its
    cap: the daemon forgot the recordings it had not seen (deleting hours of cached embeddings)
    and never analysed new files past the cap. A name with a newline forged a log line."""
    write_config(tmp_path, yamnet_handle, watch="settle_s = 0.3",
                 detection='recordings_dir = "recordings"\nscan_interval_s = 0.3\nincomplete_settle_s = 1.0')
    card = tmp_path / "card"
    card.mkdir()
    soundfile.write(card / "zz_analysed.wav", noise(40, seed=7), 16_000, subtype="PCM_16")
    soundfile.write(card / "zz_new.wav", noise(20, seed=8), 16_000, subtype="PCM_16")
    forged = "x\nDETECTION gun_shot at 2026-05-01T06:00:00Z in forged.wav"
    soundfile.write(card / "forged.wav", noise(5, seed=9), 16_000, subtype="PCM_16")
    daemon = DaemonProcess(tmp_path)
    try:
        daemon.start()
        recordings = tmp_path / "recordings"
        shutil.copyfile(card / "zz_analysed.wav", recordings / "zz_analysed.wav")
        wait_for(lambda: states(tmp_path).get("zz_analysed.wav", ("",))[0] == "done", 120, "the first recording done")
        chunks = chunk_count(tmp_path)
        assert chunks > 0
        probe = HealthProbe(daemon.http_url)
        probe.start()
        flood = recordings / "0000_flood"  # sorts before everything else
        flood.mkdir()
        for number in range(FLOOD):
            (flood / f"empty_{number:05d}.wav").touch()
        shutil.copyfile(card / "zz_new.wav", recordings / "zz_new.wav")
        shutil.copyfile(card / "forged.wav", recordings / f"{forged}.wav")
        began = time.monotonic()
        wait_for(lambda: states(tmp_path).get("zz_new.wav", ("",))[0] == "done", 900,
                 "the new recording past the flood")
        took = time.monotonic() - began
        found = states(tmp_path)
        assert found["zz_analysed.wav"][0] == "done" and chunk_count(tmp_path) > chunks  # kept, and zz_new's added
        log = daemon.log_text()
        assert "zz_analysed.wav: gone" not in log
        assert not any(line.startswith("DETECTION") for line in log.splitlines()), "a forged log line"
        assert "x\\nDETECTION gun_shot" in log  # the name, escaped
        probe.running = False
        probe.join()
        assert probe.failures == [] and probe.slowest < 5, (probe.failures, probe.slowest)
        assert daemon.stop(timeout=30) == 0
    finally:
        daemon.kill()
    print(f"flooded sub-folder: {FLOOD} files; the new recording past them done after {took:.0f} s; "
          f"slowest /health {probe.slowest:.2f} s")


def chunk_count(root: Path) -> int:
    with sqlite3.connect(root / "models" / "embedding_cache.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM recording_chunks").fetchone()[0])
