"""A file that hangs or kills whatever decodes it, against the real daemon: the issue's
3 KB WAV made libsndfile loop forever inside `sf_open`, so 0 of 20 clips dropped after it
were embedded in 120 s, /health said 200 all along, and SIGTERM was not obeyed.

That WAV did not hang the libsndfile here (72 variants of it tried), so the test-only pause
point `decoding` stands in for it: the decoder process that reaches it first never returns.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from testkit.daemon_process import DaemonProcess, wait_for, write_config
from tests.ingest.test_isolated_decode import is_alive
from tests.reliability.test_bad_input import wav_bytes

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BUDGET_S = 20


def pause_env(pause_file: Path, once: bool) -> dict[str, str]:
    env = {"ECOSIGHT_PAUSE_AT": "decoding", "ECOSIGHT_PAUSE_FILE": str(pause_file)}
    return {**env, "ECOSIGHT_PAUSE_ONCE": "1"} if once else env


def test_a_hanging_decode_holds_back_nothing_fails_after_its_budget_and_sigterm_is_obeyed(
    tmp_path: Path, yamnet_handle: str
) -> None:
    clips = tmp_path / "audio" / "clips"
    clips.mkdir(parents=True)
    write_config(tmp_path, yamnet_handle, audio=f"max_decode_s = {BUDGET_S}")
    pause_file = tmp_path / "paused.pid"
    daemon = DaemonProcess(tmp_path, env=pause_env(pause_file, once=True))
    try:
        daemon.start()
        (clips / "hangs.wav").write_bytes(wav_bytes(seed=1))
        wait_for(pause_file.exists, 60, "the first decode to hang")
        hung_at = time.monotonic()
        for i in range(20):
            (clips / f"hangs_{i:02d}.wav").write_bytes(wav_bytes(seed=10 + i))
        wait_for(lambda: sum(state == "embedded" for state in daemon.embedded_paths().values()) == 20, 60,
                 "the 20 clips after it embedded")
        assert time.monotonic() - hung_at < BUDGET_S  # while the first one still hung
        status = daemon.status()
        assert time.time() - status["updated_at"] < 10 and status["pending"] == 1
        wait_for(lambda: daemon.embedded_paths()["clips/hangs.wav"] == "failed", 60, "the hanging file failed")
        assert daemon.log_text().count("took longer than max_decode_s") == 1
        # Hang it again (a new file) and stop the daemon meanwhile: it obeys at once.
        pause_file.unlink()
        (clips / "hangs_again.wav").write_bytes(wav_bytes(seed=99))
        wait_for(pause_file.exists, 60, "the second decode to hang")
        decoder = int(pause_file.read_text())
        asked = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        stop_took = time.monotonic() - asked
        assert stop_took < 10, stop_took
        assert not is_alive(decoder)
    finally:
        daemon.kill()
    print(f"hung decode: 20 other clips embedded meanwhile; SIGTERM obeyed in {stop_took:.1f} s")


def test_a_file_that_kills_the_daemon_three_times_is_failed_at_the_next_start(
    tmp_path: Path, yamnet_handle: str
) -> None:
    clips = tmp_path / "audio" / "clips"
    clips.mkdir(parents=True)
    (clips / "killer.wav").write_bytes(wav_bytes(seed=3))
    write_config(tmp_path, yamnet_handle)
    pause_file = tmp_path / "paused.pid"
    daemon = DaemonProcess(tmp_path, env=pause_env(pause_file, once=False))
    try:
        for _ in range(3):  # as an OOM kill of the whole service would, while it decodes this file
            pause_file.unlink(missing_ok=True)
            daemon.start()
            wait_for(pause_file.exists, 60, "the decode to pause")
            decoder = int(pause_file.read_text())
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.kill()
            wait_for(lambda d=decoder: not is_alive(d), 10, "its decoder gone with it")  # type: ignore[misc]
        daemon.extra_env = {}  # the file would decode now: the count alone decides
        daemon.start()
        wait_for(lambda: daemon.embedded_paths().get("clips/killer.wav") == "failed", 60, "the file failed")
        assert "reading it was interrupted 3 times" in daemon.log_text()
        (clips / "after.wav").write_bytes(wav_bytes(seed=4))
        daemon.wait_embedded("clips/after.wav")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
