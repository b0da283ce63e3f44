"""What the commands print for people (text) and for scripts (--json documents)."""

from __future__ import annotations

from typing import Any

from ecosight_daemon.ingest.file_steps import EmbedReport
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.reports import CacheReports, ClassCounts
from ecosight_daemon.training.evaluation import format_interval
from ecosight_daemon.versions.retraining_log import metrics_summary


def scan_report(store: Database) -> dict[str, Any]:
    reports = CacheReports(store)
    counts = reports.class_counts()
    unclassified = counts.pop("", ClassCounts())
    totals = {key: sum(getattr(c, key) for c in counts.values()) for key in ClassCounts().as_dict()}
    return {
        "classes": {label: c.as_dict() for label, c in counts.items()},
        "totals": totals,
        "unclassified": unclassified.files,
        "failed": reports.failed_files(),
        "conflicts": reports.label_conflicts(),
        "embedding_model": store.clips.model_id,
    }


def format_scan(report: dict[str, Any]) -> str:
    keys = list(ClassCounts().as_dict())
    rows = [["class", *keys]]
    rows += [[label, *(str(c[k]) for k in keys)] for label, c in report["classes"].items()]
    rows.append(["total", *(str(report["totals"][k]) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    if report["unclassified"]:
        lines.append(f"{report['unclassified']} file(s) are not in a class folder and are ignored")
    for failure in report["failed"]:
        lines.append(f"failed: {failure['path']}: {failure['reason']}")
    for conflict in report["conflicts"]:
        lines.append(f"label conflict (same bytes in two classes, left out of training): "
                     f"{conflict['path']}")
    return "\n".join(lines)


def embed_summary(report: EmbedReport) -> dict[str, Any]:
    return {
        "embedded": report.embedded,
        "failed": report.failed,
        "skipped": report.skipped,
        "deferred": report.deferred,
        "patches": report.patches,
        "seconds": round(report.seconds, 3),
        "failures": [{"path": p, "reason": r} for p, r in report.failures],
    }


def format_status(status: dict[str, Any] | None, problem: str | None) -> str:
    if status is None:
        return f"not running: {problem}"
    lines = [f"not running: {problem}; last known status:"] if problem else []
    metrics = status.get("model_metrics") or {}
    lines += [
        f"state        {status['state']} (pid {status['pid']}, up {status.get('uptime_s', 0):.0f} s)",
        f"files        {status.get('pending', 0)} pending, {status.get('failed', 0)} failed, "
        f"{status.get('settling', 0)} settling",
        f"new samples  {status.get('new_samples', 0)} of {status.get('min_new_samples')} needed to retrain",
        f"next run     {status.get('next_scheduled_run') or 'no schedule'}",
        f"model        {status.get('model_version') or 'none yet'}"
        + (f" (on {metrics.get('test_samples', '?')} test clips: accuracy {metrics['accuracy']:.3f}"
           f"{format_interval(metrics.get('accuracy_interval'))}, macro-F1 {metrics['macro_f1']:.3f}"
           f"{format_interval(metrics.get('macro_f1_interval'))})" if metrics.get("accuracy") is not None else ""),
    ]
    if status.get("watcher_problem"):
        lines.append(f"problem      {status['watcher_problem']}")
    last = status.get("last_retrain")
    if last:
        lines.append(f"last retrain {last.get('timestamp')}: {last.get('status')} ({last.get('reason')})")
    for label, counts in (status.get("classes") or {}).items():
        lines.append(f"  {label:<16} {counts['files']:>6} files {counts['embedded']:>6} embedded "
                     f"{counts['pending']:>5} pending {counts['failed']:>5} failed")
    return "\n".join(lines)


def metrics_summary_or_none(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return metrics_summary(metrics) if metrics else None


def format_retrain(result: dict[str, Any]) -> str:
    lines = [f"version {result['version'] or '-'}: {result['status']} ({result['reason']})"]
    metrics, old = result["metrics"], result["replaced_metrics"]
    if metrics:
        lines.append(f"on {metrics['test_samples']} test clips (95% intervals): accuracy {metrics['accuracy']:.3f}"
                     f"{format_interval(metrics['accuracy_interval'])}, macro-F1 {metrics['macro_f1']:.3f}"
                     f"{format_interval(metrics['macro_f1_interval'])}"
                     + (f" (current model: {old['accuracy']:.3f}, {old['macro_f1']:.3f})" if old else ""))
        lines.append(f"{'class':<16}{'precision':>10}{'':>16}{'recall':>10}{'':>16}{'support':>9}")
        for label, m in metrics["per_class"].items():
            lines.append(f"{label:<16}{m['precision']:>10.3f}{format_interval(m['precision_interval']):>16}"
                         f"{m['recall']:>10.3f}{format_interval(m['recall_interval']):>16}{m['support']:>9}")
    if result.get("gate"):
        lines.append(f"gate rule: {result['gate']['rule']}")
    return "\n".join(lines)


def format_review(queue: dict[str, Any]) -> str:
    """The round's progress, then one line per pending item and per disagreement."""
    p = queue["progress"]
    lines = [f"round {p['round']}: {p['round_decided']} of {p['round_items']} decided; {p['pending']} pending, "
             f"{p['agreed']} agreed ({p['clips']} clips), {p['uncertain']} uncertain, {p['disagreed']} disagreed"]
    for name, board in (("now", queue.get("scoreboard")), ("before", queue.get("scoreboard_before"))):
        if board and board["model_versions"]:
            lines.append(f"on reviewed items, {name}: model {'+'.join(board['model_versions'])} finds "
                         f"{board['found']} of {board['confirmed_events']} confirmed events, still raises "
                         f"{board['still_raised']} of {board['rejected_alarms']} rejected alarms")
    for item in queue["pending"]:
        lines.append(f"{item['id']:>6}  {item['clock_utc'] or '-':24}  {item['label']:12} {item['score']:.3f}  "
                     f"{item['reason']:16} {item['recording']} at {item['centre_s']:.2f} s")
    for item in queue["disagreed"]:
        views = "; ".join(f"{d['reviewer']}: {d['label'] or d['verdict']}" for d in item["standing"]
                          if d["verdict"] != "skip")
        lines.append(f"{item['id']:>6}  disagreed: {views}")
    return "\n".join(lines)
