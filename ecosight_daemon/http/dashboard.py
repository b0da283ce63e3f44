"""The dashboard: server-rendered pages (Status, Training, History; Detections in
detections_page.py, Review in review_page.py) and the HTML fragments their bit of
JavaScript fetches to stay current. Everything is escaped here; nothing is loaded from
outside (it works offline)."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from importlib import resources
from typing import Any

PAGES = {"status": "Status", "training": "Training", "history": "History", "detections": "Detections",
         "review": "Review"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_page(page: str, fragment: str, token_required: bool) -> str:
    template = resources.files("ecosight_daemon.http").joinpath("dashboard.html").read_text()
    nav = "".join(f'<a href="{"/" if name == "status" else "/" + name}"{" class=active" if name == page else ""}>'
                  f"{title}</a>" for name, title in PAGES.items())
    return (template.replace("{{nav}}", nav).replace("{{page}}", page).replace("{{title}}", PAGES[page])
            .replace("{{fragment}}", fragment).replace("{{token_required}}", "true" if token_required else "false"))


def _interval(bounds: list[float] | None) -> str:
    return f" <small>[{bounds[0]:.2f}, {bounds[1]:.2f}]</small>" if bounds else ""


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def model_summary(metrics: dict[str, Any] | None, priority: str = "gun_shot") -> str:
    """Gun-shot recall first, then macro-F1 and accuracy, each with its 95% interval."""
    if not metrics:
        return "<p>No model yet.</p>"
    per_class = metrics.get("per_class") or {}
    shots = per_class.get(priority) or {}
    rows = [
        (f"{priority} recall", _figure(shots.get("recall", metrics.get("priority_recall"))),
         _interval(shots.get("recall_interval")), shots.get("support")),
        ("macro-F1", _figure(metrics.get("macro_f1")), _interval(metrics.get("macro_f1_interval")),
         metrics.get("test_samples")),
        ("accuracy", _figure(metrics.get("accuracy")), _interval(metrics.get("accuracy_interval")),
         metrics.get("test_samples")),
    ]
    body = "".join(f"<tr><th>{esc(name)}</th><td>{value}{interval}</td><td>{esc(n)}</td></tr>"
                   for name, value, interval, n in rows)
    return f"<table class=figures><tr><th></th><th>value [95%]</th><th>test clips</th></tr>{body}</table>"


def status_fragment(status: dict[str, Any], problem: str | None) -> str:
    if not status:
        return "<p>The daemon has not published its status yet.</p>"
    health = (f'<span class="badge bad">{esc(problem)}</span>' if problem
              else '<span class="badge good">healthy</span>')
    classes = status.get("classes") or {}
    keys = ("files", "embedded", "pending", "failed", "conflicts")
    rows = "".join(f'<tr data-class="{esc(label)}"><th>{esc(label)}</th>'
                   + "".join(f'<td data-key="{k}">{esc(c.get(k, 0))}</td>' for k in keys) + "</tr>"
                   for label, c in classes.items())
    failed = "".join(f"<li><code>{esc(f['path'])}</code>: {esc(f['reason'])}</li>"
                     for f in status.get("failed_files") or [])
    metrics = status.get("model_metrics")
    return f"""
<p>State <b id=state>{esc(status.get('state'))}</b> {health}</p>
<dl>
<dt>New samples</dt><dd id=new-samples>{esc(status.get('new_samples'))} of {esc(status.get('min_new_samples'))}
 (a retrain starts at the threshold)</dd>
<dt>Pending / settling</dt><dd id=pending>{esc(status.get('pending'))} / {esc(status.get('settling'))}</dd>
<dt>Next scheduled run</dt><dd>{esc(status.get('next_scheduled_run') or 'none scheduled')}</dd>
<dt>Retrain</dt><dd>{'running' if status.get('retrain_running') else 'idle'}{
    ' - queued: ' + esc('; '.join(status.get('retrain_queued') or [])) if status.get('retrain_queued') else ''}</dd>
<dt>File watcher</dt><dd>{esc(status.get('watcher'))}</dd>
</dl>
<h2>Files per class</h2>
<table id=classes><tr><th>class</th>{''.join(f'<th>{k}</th>' for k in keys)}</tr>{rows}</table>
<h2>Current model {esc(status.get('model_version') or '')}</h2>
{model_summary(metrics)}
{detector_line(status.get('model_detector'))}
<h2>Failed files ({esc(status.get('failed', 0))})</h2>
{f'<ul class=failed>{failed}</ul>' if failed else '<p>None.</p>'}
"""


def detector_line(detector: dict[str, Any] | None) -> str:
    """The current event detector in a line, its over-budget warning as a badge."""
    if not detector:
        return ""
    if "skipped" in detector:
        return f"<p id=detector>No event detector: {esc(detector['skipped'])}</p>"
    sentinel = detector.get("sentinel")
    seen = (f"; on the gate's unseen hour ({esc(sentinel['shots'])} shots) recall {esc(sentinel['recall'])}, "
            f"{esc(sentinel['false_alarms_per_hour'])} false alarms an hour") if sentinel else ""
    warning = f' <span class="badge bad">{esc(detector["warning"])}</span>' if detector.get("warning") else ""
    return f"<p id=detector>Gun shots ranked by <code>{esc(detector.get('priority_scorer'))}</code>{seen}.{warning}</p>"


def gate_fragment(entry: dict[str, Any] | None) -> str:
    """The last attempt: what the gate decided and why, gun-shot recall first."""
    if not entry:
        return "<p>No retraining attempt yet.</p>"
    metrics = entry.get("metrics")
    return f"""
<p><b>{esc(entry.get('version') or 'no version')}</b> <span class="badge {esc(entry.get('status'))}">{
    esc(entry.get('status'))}</span> triggered by <q>{esc(entry.get('trigger_reason'))}</q>,
{esc(entry.get('timestamp'))}, {esc(entry.get('duration_s'))} s</p>
<p class=reason>{esc(entry.get('reason'))}</p>
{model_summary(metrics) if metrics else ''}"""


def history_fragment(entries: list[dict[str, Any]], current: str | None) -> str:
    if not entries:
        return "<p>No retraining attempts yet.</p>"
    rows = []
    marked = False
    for entry in reversed(entries):
        version = entry.get("version")
        metrics = entry.get("metrics") or {}
        recall = (metrics.get("recall") or {}).get("gun_shot")
        actions = ""
        if version:
            actions = f'<a href="/models/{esc(version)}/report.html">report</a>'
            if entry.get("status") == "promoted" and version != current:
                actions += f' <button class=rollback data-version="{esc(version)}">Roll back to {esc(version)}</button>'
        marker = ""
        if version and version == current and not marked:  # the newest attempt that made it current
            marker, marked = " <b>(current)</b>", True
        rows.append(f"<tr><td>{esc(version or '-')}{marker}</td><td>{esc(entry.get('timestamp'))}</td>"
                    f"<td><span class='badge {esc(entry.get('status'))}'>{esc(entry.get('status'))}</span></td>"
                    f"<td>{_figure(recall)}</td><td>{_figure(metrics.get('macro_f1'))}</td>"
                    f"<td>{esc(entry.get('trigger_reason'))}</td><td>{esc(entry.get('reason'))}</td>"
                    f"<td>{actions}</td></tr>")
    return ("<table id=history-table><tr><th>version</th><th>when</th><th>outcome</th><th>gun-shot recall</th>"
            "<th>macro-F1</th><th>trigger</th><th>why</th><th></th></tr>" + "".join(rows) + "</table>")


def rendered_at() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def status_page(status: dict[str, Any], problem: str | None) -> str:
    return f"<div id=status>{status_fragment(status, problem)}</div>"


def training_page(last_entry: dict[str, Any] | None) -> str:
    return f"""
<form id=trigger><label>Reason <input id=reason type=text value="Manual retraining request" maxlength=500></label>
<button type=submit>Trigger retraining</button><span id=trigger-answer class=answer></span></form>
<p id=progress></p>
<h2>Last decision</h2><div id=gate>{gate_fragment(last_entry)}</div>
<h2>Live log</h2><div id=log></div>"""


def history_page(entries: list[dict[str, Any]], current: str | None) -> str:
    return f"<p id=rollback-answer></p><div id=history>{history_fragment(entries, current)}</div>"
