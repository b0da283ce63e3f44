"""A recording's clock: GUANO first, then the AudioMoth comment, then the name, then --start-time;
an absurd clock is dropped with its reason and never raises."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile

from ecosight_daemon.detection.clock import RecordingClock, iso_utc_at, read_clock_evidence
from ecosight_daemon.detection.clock import recording_clock as judged_clock
from ecosight_daemon.errors import AudioDecodeError

UTC = timezone.utc
NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


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


def recording_clock(path: Path, zone: tzinfo = UTC, start_time: datetime | None = None) -> RecordingClock:
    return judged_clock(path, read_clock_evidence(path), zone, start_time, now=NOW)


def test_guano_timestamp_comes_first_and_disagreeing_sources_are_noted(tmp_path: Path) -> None:
    path = _with_guano(_wav(tmp_path / "20200101_000000.wav", "Recorded at 10:00:00 02/03/2021 (UTC)"),
                       "GUANO|Version: 1.0\nTimestamp: 2024-06-07T05:04:03+02:00\n")
    clock = recording_clock(path)
    assert (clock.source, clock.start_utc) == ("guano", datetime(2024, 6, 7, 3, 4, 3, tzinfo=UTC))
    assert clock.note is not None
    assert "AudioMoth comment says 2021-03-02T10:00:00.000Z" in clock.note and "file name says 2020" in clock.note


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


@pytest.mark.parametrize("name,comment,guano,zone", [
    ("rec.wav", None, "Timestamp: 9999-12-31T23:59:59-05:00\n", UTC),  # overflows when read in UTC
    ("rec.wav", None, "Timestamp: 0001-01-01T00:00:00+05:00\n", UTC),
    ("rec.wav", None, "Timestamp: 9999-12-31T23:59:59\n", ZoneInfo("America/New_York")),
    ("rec.wav", "Recorded at 23:59:59 31/12/9999 (UTC-5)", None, UTC),
    ("rec.wav", "Recorded at 00:00:00 01/01/0001 (UTC+1)", None, UTC),
    ("AM01_99991231_235959.WAV", None, None, ZoneInfo("America/New_York")),
    ("AM01_00010101_000000.WAV", None, None, ZoneInfo("Asia/Tokyo")),
    ("AM01_99991231_235959.WAV", None, None, UTC),  # in the calendar, but 8,000 years ahead
    ("AM01_19700101_000000.WAV", None, None, UTC),  # before 1990
    ("AM01_20261206_000000.WAV", None, None, UTC),  # two days ahead of the machine
    ("rec.wav", None, "Timestamp: not a date at all\n", UTC),
])
def test_an_absurd_clock_is_dropped_with_its_reason_and_never_raises(
        tmp_path: Path, name: str, comment: str | None, guano: str | None, zone: tzinfo) -> None:
    path = _wav(tmp_path / name, comment)
    if guano is not None:
        _with_guano(path, "GUANO|Version: 1.0\n" + guano)
    clock = recording_clock(path, zone)
    assert (clock.start_utc, clock.source) == (None, "invalid"), clock
    assert clock.note and ("implausible" in clock.note or "not " in clock.note or "cannot" in clock.note), clock.note
    assert clock.at(86_400.0) is None


def test_a_plausible_clock_is_kept_when_another_source_is_absurd(tmp_path: Path) -> None:
    path = _with_guano(_wav(tmp_path / "AM01_20260501_060000.WAV"),
                       "GUANO|Version: 1.0\nTimestamp: 9999-01-01T00:00:00Z\n")
    clock = recording_clock(path)
    assert (clock.source, clock.start_utc) == ("file_name", datetime(2026, 5, 1, 6, 0, 0, tzinfo=UTC))
    assert clock.note and "GUANO Timestamp 9999-01-01" in clock.note


def test_stored_times_plus_offsets_are_total() -> None:
    assert iso_utc_at("2026-05-01T06:00:00+00:00", 90.5) == "2026-05-01T06:01:30.500Z"
    assert iso_utc_at("9999-12-31T23:59:59+00:00", 5.0) is None  # a row written before clocks were checked
    assert iso_utc_at("0001-01-01T00:00:00+00:00", -5.0) is None
    assert iso_utc_at("garbage", 1.0) is None and iso_utc_at(None, 1.0) is None


def test_a_broken_guano_chunk_is_a_reason_not_an_exception(tmp_path: Path) -> None:
    path = _wav(tmp_path / "rec.wav")
    data = bytearray(path.read_bytes()) + b"guan" + struct.pack("<I", 0xFFFFFFF0) + b"Timestamp: 2026"
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))
    clock = recording_clock(path)
    assert clock.start_utc is None and clock.source in ("invalid", "none")
