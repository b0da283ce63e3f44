"""Every output format is written and read back with its documented header."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ecosight_daemon.detection.events import Event, merge_windows
from ecosight_daemon.detection.outputs import (
    CSV_COLUMNS,
    RAVEN_COLUMNS,
    Detection,
    read_audacity_labels,
    read_detections_csv,
    read_raven_table,
    run_summary,
    write_audacity_labels,
    write_detections_csv,
    write_raven_table,
)

START = datetime(2026, 5, 1, 6, 0, 0, tzinfo=timezone.utc)


def _detections(recording: Path) -> list[Detection]:
    events = [Event("gun_shot", 12.48, 14.88, 13.68, 0.9712), Event("dog_bark", 3600.0, 3602.4, 3601.2, 0.61)]
    return [Detection(str(recording), e, START, "v0003") for e in events]


def test_detections_csv_round_trips(tmp_path: Path) -> None:
    recording = tmp_path / "AM01_20260501_060000.WAV"
    path = write_detections_csv(tmp_path, _detections(recording))
    rows = read_detections_csv(path)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["start_utc"] == "2026-05-01T06:00:12.480Z" and rows[1]["end_utc"] == "2026-05-01T07:00:02.400Z"
    assert [float(r["start_s"]) for r in rows] == [12.48, 3600.0]
    assert len({r["detection_id"] for r in rows}) == 2 and rows[0]["model_version"] == "v0003"


def test_raven_table_opens_its_audio_and_round_trips(tmp_path: Path) -> None:
    recording = tmp_path / "AM01_20260501_060000.WAV"
    path = write_raven_table(tmp_path, recording, _detections(recording))
    header = path.read_text().splitlines()[0].split("\t")
    assert header[:7] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                          "High Freq (Hz)"]
    assert header[7:9] == ["Begin Path", "File Offset (s)"]
    rows = read_raven_table(path)
    assert tuple(rows[0]) == RAVEN_COLUMNS
    assert [r["Selection"] for r in rows] == ["1", "2"]
    assert rows[1]["Begin Path"] == str(recording.resolve()) and rows[1]["File Offset (s)"] == "3600.000"


def test_audacity_labels_have_three_fields(tmp_path: Path) -> None:
    recording = tmp_path / "x.wav"
    path = write_audacity_labels(tmp_path, recording, _detections(recording))
    assert all(line.count("\t") == 2 for line in path.read_text().splitlines())
    assert read_audacity_labels(path) == [(12.48, 14.88, "gun_shot 0.97"), (3600.0, 3602.4, "dog_bark 0.61")]


def test_run_summary_is_json(tmp_path: Path) -> None:
    summary = run_summary("v0003", {"window_patches": 4}, [{"file": "a.wav", "events": 2}], START, 5400.0)
    assert json.loads(json.dumps(summary))["hours_analysed"] == 1.5


def test_windows_of_one_class_merge_into_one_event_and_background_reports_none() -> None:
    classes = ["clips", "gun_shot"]
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 0])  # windows 1-4 (one gap): one event; window 8: another
    scores = np.zeros((10, 2), np.float32)
    scores[:, 1] = [0.1, 0.6, 0.9, 0.2, 0.7, 0.1, 0.1, 0.1, 0.8, 0.1]
    events = merge_windows(labels, scores, classes, "clips", window_s=2.4, first_window=100)
    assert [(e.start_s, e.end_s, e.peak_s, e.score) for e in events] == [
        (48.48, 52.32, 50.16, 0.9),  # windows 101-104: 101 x 0.48 to 104 x 0.48 + 2.4; peak mid-window 102
        (51.84, 54.24, 53.04, 0.8),
    ]
