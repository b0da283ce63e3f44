"""A stored detection as it is shown and sent: class, score, clock times, recording,
offsets, model version (one shape for the Detections page, `GET /detections`, the SSE
event and the webhook); and the hours each recorder has had analysed, for the page's timeline."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.detection.clock import iso_utc_at
from ecosight_daemon.detection.recorders import recorder_of
from ecosight_daemon.store.recordings import StoredDetection


def detection_view(detection: StoredDetection) -> dict[str, Any]:
    """One detection as people and programs see it: the webhook's JSON, the SSE `detection`
    event, `GET /detections` and the Detections page."""
    def clock(offset_s: float) -> str | None:
        return iso_utc_at(detection.recording_start_utc, offset_s)

    return {"detection_id": detection.id, "class": detection.label, "score": round(detection.score, 4),
            "clock_time": clock(detection.peak_s), "start_utc": clock(detection.start_s),
            "end_utc": clock(detection.end_s), "recording": detection.path, "recorder": recorder_of(detection.path),
            "start_s": detection.start_s, "end_s": detection.end_s, "peak_s": detection.peak_s,
            "model_version": detection.model_version}


def recorder_timeline(spans: list[tuple[str, str, float]]) -> dict[str, list[dict[str, Any]]]:
    """Analysed recordings ((path, clock start, seconds)) by recorder, each recorder's oldest first."""
    timeline: dict[str, list[dict[str, Any]]] = {}
    for path, start_utc, seconds in sorted(spans, key=lambda span: span[1]):
        timeline.setdefault(recorder_of(path), []).append(
            {"recording": path, "start_utc": start_utc, "seconds": round(seconds, 3)})
    return dict(sorted(timeline.items()))
