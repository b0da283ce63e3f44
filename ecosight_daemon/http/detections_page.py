"""The Detections page: recent events in long recordings, opened on the priority class
(gun shots) and filtered by class, recording and clock time, under a timeline per recorder
of the hours analysed with those events on it. Rendered from the status document."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ecosight_daemon.detection.clock import parse_utc
from ecosight_daemon.http.dashboard import esc

ALL = "all"
TIMELINE_WIDTH, LABEL_WIDTH, ROW_HEIGHT = 960, 150, 24


def detections_page(status: dict[str, Any], filters: Mapping[str, str], priority_class: str) -> str:
    return f"<div id=detections>{detections_fragment(status, filters, priority_class)}</div>"


def detections_fragment(status: dict[str, Any], filters: Mapping[str, str], priority_class: str) -> str:
    recordings = status.get("recordings")
    if not recordings:
        return "<p>Detection in long recordings is off (<code>[detection] recordings_dir</code> is empty).</p>"
    states = recordings.get("by_state") or {}
    summary = (f"<p>{esc(recordings.get('hours_analysed'))} h analysed in <code>{esc(recordings.get('folder'))}</code>"
               f" &middot; recordings: " + ", ".join(f"{esc(n)} {esc(k)}" for k, n in states.items()) + "</p>")
    current = recordings.get("current")
    if current:
        summary += f"<p class=working>Now: {esc(current.get('doing'))} {esc(current.get('recording'))}</p>"
    by_class: dict[str, list[dict[str, Any]]] = recordings.get("recent_by_class") or {}
    label = filters.get("class") or (priority_class if priority_class in by_class else ALL)
    pool = (recordings.get("recent") or []) if label == ALL else by_class.get(label, [])
    since, until, problem = _clock_bounds(filters)
    recording = filters.get("recording") or ""
    shown = [d for d in pool if (not recording or d["recording"] == recording) and _within(d, since, until)]
    classes = sorted(by_class, key=lambda name: (name != priority_class, name))
    recordings_named = sorted({d["recording"] for d in pool} | ({recording} if recording else set()))
    page = summary + _filter_form(classes, label, recordings_named, recording, filters, problem)
    page += _timeline(recordings.get("timeline") or {}, shown, priority_class)
    if not shown:
        return page + f"<p>No {'' if label == ALL else esc(label) + ' '}detections{' here' if pool else ' yet'}.</p>"
    return page + "<ol class=detections>" + "".join(_item(d) for d in shown) + "</ol>"


def _item(d: dict[str, Any]) -> str:
    return (f"<li class=detection data-id={esc(d['detection_id'])} data-class={esc(d['class'])}><div>"
            f"<b>{esc(d['class'])}</b> <time>{esc(d['clock_time'] or 'unknown clock time')}</time> score "
            f"{esc(d['score'])}<br><small>{esc(d['recording'])} at {d['start_s']:.2f}-{d['end_s']:.2f} s &middot; "
            f"model {esc(d['model_version'])}</small></div>"
            f"<img alt='spectrogram' loading=lazy width=375 height=128 "
            f"src='/detections/{esc(d['detection_id'])}/spectrogram.png'>"
            f"<audio controls preload=none src='/detections/{esc(d['detection_id'])}/audio.wav'></audio></li>")


def _filter_form(classes: list[str], label: str, recordings: list[str], recording: str,
                 filters: Mapping[str, str], problem: str) -> str:
    def options(values: list[str], chosen: str, everything: str) -> str:
        return f"<option value=''>{everything}</option>" + "".join(
            f"<option value='{esc(v)}'{' selected' if v == chosen else ''}>{esc(v)}</option>" for v in values)

    class_options = f"<option value={ALL}{' selected' if label == ALL else ''}>all classes</option>" + "".join(
        f"<option value='{esc(c)}'{' selected' if c == label else ''}>{esc(c)}</option>" for c in classes)
    return (f"<form id=detection-filters method=get action=/detections>"
            f"<label>Class <select name=class>{class_options}</select></label> "
            f"<label>Recording <select name=recording>{options(recordings, recording, 'all recordings')}"
            f"</select></label> "
            f"<label>From <input type=datetime-local name=since value='{esc(filters.get('since', ''))}'></label> "
            f"<label>to <input type=datetime-local name=until value='{esc(filters.get('until', ''))}'></label> "
            f"<small>(UTC)</small> <button type=submit>Show</button>"
            + (f" <span class=problem>{esc(problem)}</span>" if problem else "") + "</form>")


def _clock_bounds(filters: Mapping[str, str]) -> tuple[datetime | None, datetime | None, str]:
    bounds: list[datetime | None] = []
    problems = []
    for key in ("since", "until"):
        text = filters.get(key) or ""
        try:
            bounds.append(datetime.fromisoformat(text).replace(tzinfo=timezone.utc) if text else None)
        except ValueError:
            bounds.append(None)
            problems.append(f"{key} {text!r} is not a date and time (YYYY-MM-DDTHH:MM); left out")
    return bounds[0], bounds[1], "; ".join(problems)


def _within(detection: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    if since is None and until is None:
        return True
    moment = parse_utc(detection.get("clock_time"))
    return moment is not None and (since is None or moment >= since) and (until is None or moment <= until)


def _timeline(timeline: dict[str, list[dict[str, Any]]], shown: list[dict[str, Any]], priority_class: str) -> str:
    """One row per recorder: its analysed recordings as bars on the clock, the events shown as ticks."""
    spans = [(recorder, start, float(r["seconds"]), r["recording"]) for recorder, rows in timeline.items()
             for r in rows if (start := parse_utc(r["start_utc"])) is not None]
    if not spans:
        return "<p class=timeline-empty>No analysed recording with a clock time to draw yet.</p>"
    first = min(start for _, start, _, _ in spans)
    last = max(start.timestamp() + seconds for _, start, seconds, _ in spans)
    scale = (TIMELINE_WIDTH - LABEL_WIDTH - 10) / max(1.0, last - first.timestamp())
    rows = {recorder: i for i, recorder in enumerate(timeline)}

    def x(moment: datetime) -> float:
        return LABEL_WIDTH + (moment.timestamp() - first.timestamp()) * scale

    parts = [f"<text x=0 y={i * ROW_HEIGHT + 16}>{esc(recorder)}</text>" for recorder, i in rows.items()]
    parts += [f"<rect class=analysed x={x(start):.1f} y={rows[recorder] * ROW_HEIGHT + 4} "
              f"width={max(1.0, seconds * scale):.1f} height={ROW_HEIGHT - 8}><title>{esc(name)}</title></rect>"
              for recorder, start, seconds, name in spans]
    for d in shown:
        moment = parse_utc(d.get("clock_time"))
        if moment is None or d.get("recorder") not in rows:
            continue
        top = rows[d["recorder"]] * ROW_HEIGHT
        kind = "priority" if d["class"] == priority_class else "other"
        parts.append(f"<line class='event {kind}' x1={x(moment):.1f} x2={x(moment):.1f} y1={top + 1} "
                     f"y2={top + ROW_HEIGHT - 1}><title>{esc(d['class'])} {esc(d['clock_time'])}</title></line>")
    height = len(rows) * ROW_HEIGHT + 18
    end = datetime.fromtimestamp(last, timezone.utc)
    parts.append(f"<text class=axis x={LABEL_WIDTH} y={height - 4}>{esc(first.isoformat(timespec='minutes'))}</text>")
    parts.append(f"<text class=axis x={TIMELINE_WIDTH - 10} y={height - 4} text-anchor=end>"
                 f"{esc(end.isoformat(timespec='minutes'))}</text>")
    return (f"<svg id=timeline role=img aria-label='hours analysed per recorder' width={TIMELINE_WIDTH} "
            f"height={height} viewBox='0 0 {TIMELINE_WIDTH} {height}'>" + "".join(parts) + "</svg>")
