"""Which recorder a recording came from, and the timeline of hours each has had analysed."""

from __future__ import annotations

from ecosight_daemon.detection.detection_view import recorder_timeline
from ecosight_daemon.detection.recorders import UNKNOWN_RECORDER, recorder_of


def test_the_recorder_is_the_sub_folder_else_the_device_id_in_an_audiomoth_name() -> None:
    assert recorder_of("ridge-north/20260501_060000.WAV") == "ridge-north"
    assert recorder_of("ridge-north/2026/AM01_20260501_060000.WAV") == "ridge-north"
    assert recorder_of("AM01_20260501_060000.WAV") == "AM01"
    assert recorder_of("24F3190461CB2F43_20260501_060000T.WAV") == "24F3190461CB2F43"
    assert recorder_of("20260501_060000.WAV") == UNKNOWN_RECORDER  # AudioMoth's own name carries no id
    assert recorder_of("dawn chorus.flac") == UNKNOWN_RECORDER


def test_the_timeline_groups_recordings_by_recorder_oldest_first() -> None:
    spans = [("AM02_20260502_043000.WAV", "2026-05-02T04:30:00Z", 200.0),
             ("AM01_20260501_070000.WAV", "2026-05-01T07:00:00Z", 3600.0),
             ("AM01_20260501_060000.WAV", "2026-05-01T06:00:00Z", 3599.9996)]
    timeline = recorder_timeline(spans)
    assert list(timeline) == ["AM01", "AM02"]
    assert [r["recording"] for r in timeline["AM01"]] == ["AM01_20260501_060000.WAV", "AM01_20260501_070000.WAV"]
    assert timeline["AM01"][0] == {"recording": "AM01_20260501_060000.WAV", "start_utc": "2026-05-01T06:00:00Z",
                                   "seconds": 3600.0}
