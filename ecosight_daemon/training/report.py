"""Pictures people would rather look at than read: confusion matrix, training curves and a
self-contained report.html per version (matplotlib with the Agg backend, no display)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.training.evaluation import format_interval


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], target: Path) -> None:
    values = np.array(matrix)
    figure, axes = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (test split)")
    limit = values.max() / 2 if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > limit else "black")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def plot_training_curves(history: dict[str, list[float]], target: Path) -> None:
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for key, axes in (("loss", loss_axes), ("accuracy", accuracy_axes)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if history.get(prefix + key):
                axes.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], style,
                          marker="o" if len(history[prefix + key]) == 1 else None,
                          label="validation" if prefix else "training")
        axes.set_xlabel("epoch")
        axes.set_title(key)
        axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def _metrics_table(metrics: dict[str, Any], incumbent: dict[str, Any] | None) -> str:
    head = ("<tr><th>class</th><th>precision [95% interval]</th><th>recall [95% interval]</th><th>F1</th>"
            "<th>support</th>")
    head += "<th>recall of the model it replaces</th></tr>" if incumbent else "</tr>"
    rows = []
    for name, m in metrics["per_class_metrics"].items():
        old = incumbent["per_class_metrics"].get(name) if incumbent else None
        extra = f"<td>{old['recall']:.3f}</td>" if old else ("<td>-</td>" if incumbent else "")
        precision = f"{m['precision']:.3f}{format_interval(m.get('precision_interval'))}"
        recall = f"{m['recall']:.3f}{format_interval(m.get('recall_interval'))}"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{precision}"
                    f" of {m.get('predicted', '-')}</td><td>{recall}</td>"
                    f"<td>{m['f1']:.3f}</td><td>{m['support']}</td>{extra}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _gate_paragraph(decision: dict[str, Any] | None) -> str:
    if not decision:
        return ""
    return (f"<p>Gate: {html.escape(decision['rule'])}. Statistics: "
            f"<code>{html.escape(json.dumps(decision['statistics']))}</code></p>")


def write_report(folder: Path, metadata: dict[str, Any], metrics: dict[str, Any],
                 history: dict[str, list[float]], incumbent: dict[str, Any] | None) -> None:
    plot_confusion_matrix(metrics["confusion_matrix"], metrics["class_names"], folder / files.CONFUSION_PNG)
    plot_training_curves(history, folder / files.CURVES_PNG)
    curves = _image(folder / files.CURVES_PNG, "training curves")
    if len(history.get("loss", [])) == 1:
        curves = ("<p>The logistic head is fitted to convergence, not epoch by epoch: one point, its loss "
                  "and accuracy on what it learned from, and out of fold (\"validation\").</p>" + curves)
    comparison = "<p>No earlier model to compare with.</p>"
    if incumbent:
        comparison = (f"<p>Model it replaces ({html.escape(str(metadata.get('replaced_version')))}), on the "
                      f"same test split: accuracy {incumbent['accuracy']:.3f}, macro-F1 "
                      f"{incumbent['macro_f1']:.3f}.</p>")
    threshold = metadata.get("priority_threshold")
    fitted_on = str(metadata.get("model_fitted_on", "the training split"))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>EcoSight model {html.escape(metadata['version'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>Model {html.escape(metadata['version'])}: {html.escape(metadata['status'])}</h1>
<p>{html.escape(metadata['decision_reason'])}</p>
<p>Trained {html.escape(metadata['date'])} (trigger: {html.escape(str(metadata['trigger_reason']))}) on
{sum(metadata['sample_counts']['train'].values())} clips; tested on {metrics['samples']} clips from recordings
never seen by the model these figures come from ({html.escape(fitted_on)}).
Accuracy {metrics['accuracy']:.3f}{format_interval(metrics.get('accuracy_interval'))}, macro-F1
{metrics['macro_f1']:.3f}{format_interval(metrics.get('macro_f1_interval'))} (95% intervals: Wilson for rates, bootstrap
for macro-F1; on {metrics['samples']} clips a difference inside them is noise).
{html.escape(metadata['priority_class'])} threshold:
{'none (argmax)' if threshold is None else f'{threshold:.3f}'}.</p>
{comparison}
{_gate_paragraph(metadata.get('gate'))}
<h2>Per class (test split)</h2>
{_metrics_table(metrics, incumbent)}
<h2>Confusion matrix</h2>
{_image(folder / files.CONFUSION_PNG, 'confusion matrix')}
<h2>Training curves</h2>
{curves}
</body></html>
"""
    (folder / files.REPORT_HTML).write_text(page)
