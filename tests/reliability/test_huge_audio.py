"""Files whose decoded size is huge although the file is small, or whose header lies:
each one is decoded, resampled and embedded in bounded memory, or refused with a reason.

The daemon's peak RSS (VmHWM) over all of them stays under HOSTILE_RSS_BOUND_MIB. Before
block decoding, the first file below (0.9 MB on disk) took the daemon from 0.9 to 5.2 GiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from testkit.daemon_process import DaemonProcess, idle_daemon, wait_for
from tests.reliability.test_load import peak_rss_mib

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

HOSTILE_RSS_BOUND_MIB = 1_600  # the README's bound for the daemon while it ingests any file


def write_long_flac(path: Path, seconds: int, rate: int, channels: int, clicks: bool) -> None:
    """Mostly silence (FLAC packs it to almost nothing), optionally a click every second."""
    audio_format = "FLAC" if channels <= 8 else "WAV"  # FLAC holds at most 8 channels
    with soundfile.SoundFile(path, "w", rate, channels, subtype="PCM_16", format=audio_format) as sound:
        second = np.zeros((rate, channels), dtype=np.int16)
        if clicks:
            second[:64] = 12_000
        for _ in range(seconds):
            sound.write(second)


def lying_wav(claimed_frames: int, actual_frames: int, channels: int = 1, rate: int = 16_000) -> bytes:
    """A WAV header that promises claimed_frames, followed by actual_frames of a tone."""
    t = np.arange(actual_frames) / rate
    samples = (np.sin(2 * np.pi * 440 * t)[:, None] * 8_000).repeat(channels, axis=1).astype("<i2").tobytes()
    data_size = claimed_frames * channels * 2
    header = b"RIFF" + struct.pack("<I", min(36 + data_size, 2**32 - 1)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    header += b"data" + struct.pack("<I", min(data_size, 2**32 - 1))
    return header + samples


@pytest.fixture
def daemon(tmp_path: Path, yamnet_handle: str) -> Iterator[DaemonProcess]:
    with idle_daemon(tmp_path, yamnet_handle) as process:
        yield process


def test_huge_decoded_sizes_and_lying_headers_in_bounded_memory(daemon: DaemonProcess, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    write_long_flac(staging / "silence_590s_192k_8ch.flac", 590, 192_000, 8, clicks=False)
    write_long_flac(staging / "clicks_590s_192k_8ch.flac", 590, 192_000, 8, clicks=True)
    write_long_flac(staging / "clicks_10s_48k_64ch.wav", 60, 48_000, 64, clicks=True)
    (staging / "lies_about_length.wav").write_bytes(lying_wav(claimed_frames=500 * 16_000, actual_frames=16_000))
    (staging / "lies_about_too_much.wav").write_bytes(lying_wav(claimed_frames=2**31, actual_frames=16_000))
    expected = {
        "silence_590s_192k_8ch.flac": ("failed", "digital silence"),
        "clicks_590s_192k_8ch.flac": ("embedded", ""),
        "clicks_10s_48k_64ch.wav": ("embedded", ""),
        "lies_about_length.wav": ("embedded", ""),  # the audio it has
        "lies_about_too_much.wav": ("embedded", ""),  # libsndfile trusts the bytes, not the header
    }
    assert (staging / "silence_590s_192k_8ch.flac").stat().st_size < 2_000_000
    idle_rss = peak_rss_mib(daemon.proc.pid)  # type: ignore[union-attr]
    for name in expected:
        (staging / name).rename(daemon.audio / "clips" / name)

    def settled() -> bool:
        states = daemon.embedded_paths()
        return all(states.get(f"clips/{name}") in ("embedded", "failed") for name in expected)

    wait_for(settled, 300, "every hostile file embedded or refused")
    import sqlite3

    with sqlite3.connect(daemon.models / "embedding_cache.sqlite3") as db:
        rows = dict(((p, (s, r or "")) for p, s, r in db.execute("SELECT path, state, reason FROM files")))
    for name, (state, words) in expected.items():
        got_state, reason = rows[f"clips/{name}"]
        assert got_state == state and words in reason, (name, got_state, reason)
    peak = peak_rss_mib(daemon.proc.pid)  # type: ignore[union-attr]
    print(f"daemon peak RSS: idle {idle_rss:.0f} MiB, after the hostile files {peak:.0f} MiB")
    assert peak < HOSTILE_RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB (idle {idle_rss:.0f} MiB)"
    assert daemon.stop() == 0
