"""A recording's clock: GUANO first, then the AudioMoth comment, then the name, then --start-time."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from ecosight_daemon.detection.clock import recording_clock
from ecosight_daemon.errors import AudioDecodeError

UTC = timezone.utc


def _wav(path: Path, comment: str | None = None) -> Path:
    with soundfile.SoundFile(path, "w", 16_000, 1, "PCM_16", format="WAV") as sound:
        if comment is not None:
            sound.comment = comment
        sound.write(np.zeros(1600, np.float32))
    return path


def _with_guano(path: Path, text: str) -> Path:
    """A GUANO chunk ("guan") appended to the RIFF, as GUANO writers do."""
    body = text.encode()
    if len(body) % 2:
        body += b" "
    data = bytearray(path.read_bytes()) + b"guan" + struct.pack("<I", len(body)) + body
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))
    return path


def test_guano_timestamp_comes_first(tmp_path: Path) -> None:
    path = _with_guano(_wav(tmp_path / "20200101_000000.wav", "Recorded at 10:00:00 02/03/2021 (UTC)"),
                       "GUANO|Version: 1.0\nTimestamp: 2024-06-07T05:04:03+02:00\n")
    clock = recording_clock(path)
    assert (clock.source, clock.start_utc) == ("guano", datetime(2024, 6, 7, 3, 4, 3, tzinfo=UTC))


def test_audiomoth_comment_with_its_offset(tmp_path: Path) -> None:
    path = _wav(tmp_path / "20200101_000000.WAV",
                "Recorded at 21:15:30 02/03/2021 (UTC+1) by AudioMoth 24A04F085FDF5B2B at medium gain")
    clock = recording_clock(path)
    assert (clock.source, clock.start_utc) == ("audiomoth_comment", datetime(2021, 3, 2, 20, 15, 30, tzinfo=UTC))


def test_an_audiomoth_name_is_utc_unless_a_time_zone_is_given(tmp_path: Path) -> None:
    path = _wav(tmp_path / "AM07_20260501_060000.WAV")
    assert recording_clock(path).start_utc == datetime(2026, 5, 1, 6, 0, 0, tzinfo=UTC)
    local = recording_clock(path, ZoneInfo("Africa/Libreville"))
    assert (local.source, local.start_utc) == ("file_name", datetime(2026, 5, 1, 5, 0, 0, tzinfo=UTC))
    assert local.at(90.5) == datetime(2026, 5, 1, 5, 1, 30, 500_000, tzinfo=UTC)


def test_start_time_is_the_last_resort_and_none_is_said(tmp_path: Path) -> None:
    path = _wav(tmp_path / "site_b.wav")
    given = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(hours=0)
    assert recording_clock(path, start_time=given).source == "start_time"
    assert recording_clock(path).start_utc is None and recording_clock(path).source == "none"


def test_an_amplitude_triggered_file_is_refused(tmp_path: Path) -> None:
    path = _wav(tmp_path / "20260501_060000T.WAV")
    with pytest.raises(AudioDecodeError, match="triggered"):
        recording_clock(path)
