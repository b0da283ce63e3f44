"""Decoding in a process that can be stopped (isolated_decode.py), with real child processes
and real files: the same audio as decoding in-process, the same reasons for bad files, a
decode past its budget stopped, a killed decoder reported and replaced, and no decoder
left behind when its daemon is SIGKILLed.

libsndfile's endless loop on a lying 3 KB WAV (the issue's report) did not reproduce with
the libsndfile here in 72 variants; where a test needs a decoder that never returns, the
test-only pause point `decoding` stands in for it, and a real file that is merely slow
stands in for it where a budget must be exceeded.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.ingest.isolated_decode import DecoderInterrupted, IsolatedDecoder
from ecosight_daemon.ingest.limits import IngestLimits
from testkit.audio_files import WavWriter
from testkit.daemon_process import wait_for
from testkit.paths import hanging_wav

LIMITS = IngestLimits((".wav",), max_duration_s=600, max_file_bytes=500_000_000, min_duration_s=0.05,
                      min_peak_dbfs=-60.0, max_decode_s=30.0)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_same_audio_and_the_same_reasons_as_decoding_in_process(tmp_path: Path, write_wav: WavWriter) -> None:
    stereo = write_wav(tmp_path / "stereo.wav", "noise", seconds=3.0, rate=44_100, channels=2, seed=3)
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16_000, np.float32), 16_000)
    decoder = IsolatedDecoder(LIMITS)
    try:
        got = decoder.decode(stereo.read_bytes())
        want = decode_audio(stereo.read_bytes(), 600, 0.05, -60.0)
        assert (got.source_sample_rate, got.source_channels) == (44_100, 2)
        np.testing.assert_array_equal(got.waveform, want.waveform)
        for data in (b"", b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, silent.read_bytes()):
            with pytest.raises(AudioDecodeError) as in_process:
                decode_audio(data, 600, 0.05, -60.0)
            with pytest.raises(AudioDecodeError) as isolated:
                decoder.decode(data)
            assert str(isolated.value) == str(in_process.value)
        assert decoder.started == 1  # bad files do not cost a new process
    finally:
        decoder.close()


def test_a_decode_past_its_budget_is_stopped_and_the_next_file_gets_a_new_decoder(
    tmp_path: Path, write_wav: WavWriter
) -> None:
    # 600 s of stereo 48 kHz audio: a real, valid file that takes a while to decode (~1 s here).
    slow = write_wav(tmp_path / "slow.wav", "noise", seconds=600.0, rate=48_000, channels=2, seed=1)
    quick = write_wav(tmp_path / "quick.wav", "tone", seconds=1.0)
    decoder = IsolatedDecoder(IngestLimits((".wav",), 600, 500_000_000, max_decode_s=0.2))
    try:
        decoder.start()
        first_child = decoder.pid
        assert first_child is not None
        started = time.monotonic()
        with pytest.raises(AudioDecodeError, match=r"took longer than max_decode_s \(0.2 s\) and was stopped"):
            decoder.decode(slow.read_bytes())
        assert time.monotonic() - started < 5.0
        assert not is_alive(first_child)
        assert len(decoder.decode(quick.read_bytes()).waveform) == 16_000
        assert decoder.started == 2
    finally:
        decoder.close()


def test_a_killed_decoder_is_reported_and_replaced(tmp_path: Path, write_wav: WavWriter,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pause_file = tmp_path / "paused.pid"
    monkeypatch.setenv("ECOSIGHT_PAUSE_AT", "decoding")
    monkeypatch.setenv("ECOSIGHT_PAUSE_FILE", str(pause_file))
    monkeypatch.setenv("ECOSIGHT_PAUSE_ONCE", "1")  # the second decode runs
    clip = write_wav(tmp_path / "clip.wav", "tone", seconds=1.0).read_bytes()
    decoder = IsolatedDecoder(LIMITS)
    try:
        with ThreadPoolExecutor(1) as pool:
            decoding = pool.submit(decoder.decode, clip)
            wait_for(pause_file.exists, 30, "the decoder to reach its pause point")
            os.kill(int(pause_file.read_text()), signal.SIGKILL)
            with pytest.raises(DecoderInterrupted, match="the decoder process was killed by SIGKILL"):
                decoding.result(timeout=10)
        assert len(decoder.decode(clip).waveform) == 16_000
        assert decoder.started == 2
    finally:
        decoder.close()


PARENT = textwrap.dedent("""
    import sys
    from ecosight_daemon.ingest.isolated_decode import IsolatedDecoder
    from ecosight_daemon.ingest.limits import IngestLimits
    IsolatedDecoder(IngestLimits((".wav",), 600, 10**9, max_decode_s=600)).decode(open(sys.argv[1], "rb").read())
""")


def test_a_decoder_dies_with_its_daemon_even_in_the_middle_of_a_decode(
    tmp_path: Path, write_wav: WavWriter
) -> None:
    pause_file = tmp_path / "paused.pid"
    clip = write_wav(tmp_path / "clip.wav", "tone", seconds=1.0)
    env = {**os.environ, "ECOSIGHT_PAUSE_AT": "decoding", "ECOSIGHT_PAUSE_FILE": str(pause_file)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(clip)], env=env)
    try:
        wait_for(pause_file.exists, 60, "the decoder to reach its pause point")
        child = int(pause_file.read_text())
        assert is_alive(child)
        parent.kill()  # SIGKILL: the parent runs no clean-up
        parent.wait(timeout=10)
        wait_for(lambda: not is_alive(child), 10, "the orphaned decoder to be killed with its parent")
    finally:
        parent.kill()


def test_an_idle_decoder_is_stopped_and_started_again_when_needed(tmp_path: Path, write_wav: WavWriter) -> None:
    clip = write_wav(tmp_path / "clip.wav", "tone", seconds=1.0).read_bytes()
    decoder = IsolatedDecoder(LIMITS)
    try:
        assert decoder.pid is None  # nothing started before the first file
        decoder.decode(clip)
        first = decoder.pid
        assert first is not None
        decoder.stop_if_idle(60.0)
        assert decoder.pid == first  # used a moment ago: kept
        time.sleep(0.2)
        decoder.stop_if_idle(0.1)
        assert decoder.pid is None and not is_alive(first)
        assert len(decoder.decode(clip).waveform) == 16_000 and decoder.started == 2
    finally:
        decoder.close()


def test_the_wav_that_hangs_libsndfile_fails_after_its_budget_and_the_next_file_decodes(write_wav: WavWriter,
                                                                                          tmp_path: Path) -> None:
    """The real specimen (../shared/data/specimens/list_info_hang.wav): libsndfile 1.2.2 never
    returns on it, in-process or here; only the budget ends it."""
    specimen = hanging_wav()
    assert specimen.is_file(), f"{specimen} missing (../shared/data/specimens)"
    decoder = IsolatedDecoder(dataclasses.replace(LIMITS, max_decode_s=3.0))
    try:
        started = time.monotonic()
        with pytest.raises(AudioDecodeError, match="longer than max_decode_s"):
            decoder.decode(specimen.read_bytes())
        assert time.monotonic() - started < 6
        clip = write_wav(tmp_path / "after.wav", "noise", seconds=1.0, seed=5)
        assert len(decoder.decode(clip.read_bytes()).waveform) == 16_000
    finally:
        decoder.close()
