"""Detections in the formats field tools open: one CSV for the run, a Raven Pro selection
table and Audacity labels per recording with events, and run.json. The headers are
constants, each with a reader the tests round-trip through (docs/detection.md)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ecosight_daemon.detection.clock import UTC, clock_at, iso_utc
from ecosight_daemon.detection.events import Event
from ecosight_daemon.util.durable import replace_atomically

DETECTIONS_CSV = "detections.csv"
RUN_JSON = "run.json"
CSV_COLUMNS = ("file", "start_s", "end_s", "peak_s", "class", "score", "start_utc", "end_utc", "peak_utc",
               "model_version", "detection_id")
RAVEN_SUFFIX = ".ecosight.selections.txt"
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "File Offset (s)", "Class", "Score", "Peak Time (s)", "Begin Clock (UTC)",
                 "Model Version", "Detection ID")
AUDACITY_SUFFIX = ".ecosight.labels.txt"
HIGH_FREQ_HZ = 8000  # what the model hears: 16 kHz audio


def write_bytes_atomic(path: Path, data: bytes) -> None:
    replace_atomically(path, lambda tmp: None if tmp.write_bytes(data) else None)


@dataclass(frozen=True)
class Detection:
    """An event in one recording, with its clock times and the model that found it."""

    file: str
    event: Event
    start_utc: datetime | None
    model_version: str

    @property
    def detection_id(self) -> str:
        key = f"{self.file}|{self.event.label}|{self.event.start_s:.3f}|{self.model_version}"
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    def clock(self, offset_s: float) -> str:
        return iso_utc(clock_at(self.start_utc, offset_s)) or ""

    def csv_row(self) -> dict[str, str]:
        e = self.event
        return {"file": self.file, "start_s": f"{e.start_s:.3f}", "end_s": f"{e.end_s:.3f}",
                "peak_s": f"{e.peak_s:.3f}", "class": e.label, "score": f"{e.score:.4f}",
                "start_utc": self.clock(e.start_s), "end_utc": self.clock(e.end_s), "peak_utc": self.clock(e.peak_s),
                "model_version": self.model_version, "detection_id": self.detection_id}


def _text(rows: Iterable[dict[str, str]], columns: tuple[str, ...], delimiter: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_detections_csv(out_dir: Path, detections: list[Detection]) -> Path:
    path = out_dir / DETECTIONS_CSV
    write_bytes_atomic(path, _text((d.csv_row() for d in detections), CSV_COLUMNS, ","))
    return path


def read_detections_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: not a detections.csv of this version (columns {reader.fieldnames})")
        return list(reader)


def unique_table_names(recordings: list[Path]) -> dict[Path, str]:
    """Each recording's stem for its tables; recordings that share a stem (two sites' cards
    with the same AudioMoth name) get a short hash of their full path after it."""
    stems: dict[str, int] = {}
    for path in recordings:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {path: path.stem if stems[path.stem] == 1 else
            f"{path.stem}.{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}" for path in recordings}


def write_raven_table(out_dir: Path, recording: Path, detections: list[Detection], stem: str | None = None) -> Path:
    """A Raven Pro selection table: Begin Path and File Offset let Raven open the audio."""
    rows = []
    for number, d in enumerate(detections, start=1):
        e = d.event
        rows.append({"Selection": str(number), "View": "Spectrogram 1", "Channel": "1",
                     "Begin Time (s)": f"{e.start_s:.3f}", "End Time (s)": f"{e.end_s:.3f}",
                     "Low Freq (Hz)": "0", "High Freq (Hz)": str(HIGH_FREQ_HZ),
                     "Begin Path": str(recording.resolve()), "File Offset (s)": f"{e.start_s:.3f}",
                     "Class": e.label, "Score": f"{e.score:.4f}", "Peak Time (s)": f"{e.peak_s:.3f}",
                     "Begin Clock (UTC)": d.clock(e.start_s), "Model Version": d.model_version,
                     "Detection ID": d.detection_id})
    path = out_dir / ((stem or recording.stem) + RAVEN_SUFFIX)
    write_bytes_atomic(path, _text(rows, RAVEN_COLUMNS, "\t"))
    return path


def read_raven_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != RAVEN_COLUMNS:
            raise ValueError(f"{path}: not a selection table of this version (columns {reader.fieldnames})")
        return list(reader)


def write_audacity_labels(out_dir: Path, recording: Path, detections: list[Detection],
                          stem: str | None = None) -> Path:
    """Audacity's label track: start<TAB>end<TAB>label, no header."""
    lines = [f"{d.event.start_s:.6f}\t{d.event.end_s:.6f}\t{d.event.label} {d.event.score:.2f}\n" for d in detections]
    path = out_dir / ((stem or recording.stem) + AUDACITY_SUFFIX)
    write_bytes_atomic(path, "".join(lines).encode())
    return path


def read_audacity_labels(path: Path) -> list[tuple[float, float, str]]:
    labels = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{path}: an Audacity label line has 3 tab-separated fields, not {len(fields)}")
        labels.append((float(fields[0]), float(fields[1]), fields[2]))
    return labels


def run_summary(model_version: str, parameters: dict[str, Any], recordings: list[dict[str, object]],
                started: datetime, seconds_analysed: float) -> dict[str, Any]:
    return {"model_version": model_version, "parameters": parameters,
            "started_utc": started.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "hours_analysed": round(seconds_analysed / 3600, 4), "recordings": recordings}
