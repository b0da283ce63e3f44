"""The training child: runs in a process started with `spawn`, reads a job folder, writes
its results into the same folder and nothing else. TensorFlow lives only here, so
repeated fits cannot leak memory into the long-running parent, and a hung run can be
killed without harming anything the operators use.
"""

from __future__ import annotations

import json
import logging
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import pause
from .evaluation import apply_priority_threshold, choose_priority_threshold, classification_metrics

logger = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class JobFiles:
    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "job_data.npz"

    @property
    def spec(self) -> Path:
        return self.folder / "job.json"

    @property
    def result(self) -> Path:
        return self.folder / "job_result.json"


def write_job(folder: Path, features: np.ndarray, labels: np.ndarray, splits: list[str],
              spec: dict[str, Any]) -> JobFiles:
    files = JobFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(files.data, features=features, labels=labels,
             splits=np.array([SPLIT_CODES[s] for s in splits], dtype=np.int8))
    files.spec.write_text(json.dumps(spec, indent=2))
    return files


def child_main(connection: Any, log_level: str) -> None:
    """Entry point of the spawned process: import TensorFlow, then serve one job.

    The parent may start this process long before it has a job (a warm child), so the
    slow import is paid while nothing waits for it. Messages: the job folder (or None to
    exit); after "fitted", optionally ("export", folder) for the end-to-end SavedModel.
    """
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("absl", "tensorflow"):  # SavedModel export chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    from . import training  # the slow part: TensorFlow

    training.warm_up()

    try:
        folder = connection.recv()
    except EOFError:
        return
    if folder is None:
        return
    files = JobFiles(Path(folder))
    export = None
    try:
        result, export = run_job(files, stop.is_set)
    except Exception as exc:
        logger.exception("training failed")
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    files.result.write_text(json.dumps(result, indent=2))
    connection.send("fitted")
    _serve_exports(connection, export)


def _serve_exports(connection: Any, export: Any) -> None:
    while True:
        try:
            command = connection.recv()
        except EOFError:
            return
        if command is None:
            return
        _, target = command
        try:
            if export is None:
                raise RuntimeError("no trained model to export")
            export(Path(target))
            connection.send(("exported", None))
        except Exception as exc:
            logger.exception("export failed")
            connection.send(("failed", f"{type(exc).__name__}: {exc}"))


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_job(files: JobFiles, should_stop: Any) -> tuple[dict[str, Any], Callable[[Path], None] | None]:
    """Fit and evaluate; returns the result and a function that exports the fitted model."""
    from .training import (
        ClassifierParams,
        export_end_to_end,
        fit_classifier,
        load_classifier,
        predict_probabilities,
        save_classifier,
    )

    spec = json.loads(files.spec.read_text())
    data = np.load(files.data)
    features, labels, splits = data["features"], data["labels"], data["splits"]
    train, val, test = (splits == 0), (splits == 1), (splits == 2)
    classes: list[str] = spec["classes"]
    params = ClassifierParams(**{**spec["params"], "hidden_units": tuple(spec["params"]["hidden_units"])})
    logger.info("training on %d clips (%d validation, %d test), %d classes",
                int(train.sum()), int(val.sum()), int(test.sum()), len(classes))
    pause.point("training")
    fit = fit_classifier(features[train], labels[train], features[val], labels[val],
                         len(classes), params, should_stop)
    if fit.stopped_early_by_request:
        return {"ok": False, "error": "stopped on request"}, None

    priority = spec["priority_class"]
    priority_index = classes.index(priority) if priority in classes else None
    threshold = None
    threshold_info: dict[str, Any] = {"note": f"{priority} is not among the trained classes"}
    if priority_index is not None:
        choice = choose_priority_threshold(predict_probabilities(fit.model, features[val]), labels[val],
                                           priority_index, spec["priority_recall_target"],
                                           spec["priority_min_precision"])
        threshold, threshold_info = choice.threshold, choice.as_dict()

    test_probabilities = predict_probabilities(fit.model, features[test])
    candidate = classification_metrics(
        labels[test], apply_priority_threshold(test_probabilities, priority_index, threshold), classes
    )
    incumbent = evaluate_incumbent(spec.get("incumbent"), features[test], labels[test], classes,
                                   load_classifier, predict_probabilities)

    save_classifier(fit.model, files.folder / "model.keras")
    (files.folder / "training_history.json").write_text(json.dumps(fit.history, indent=2))
    # Written for tools that expect the old file; this program never loads a pickle.
    (files.folder / "training_history.pkl").write_bytes(pickle.dumps(fit.history))

    def export(target: Path) -> None:
        export_end_to_end(spec["export_handle"], fit.model, classes, spec["pooling"], priority_index,
                          threshold, target)

    return {
        "ok": True,
        "epochs_run": fit.epochs_run,
        "history": fit.history,
        "priority_threshold": threshold,
        "threshold": threshold_info,
        "candidate_metrics": candidate,
        "incumbent_metrics": incumbent,
    }, export


def evaluate_incumbent(
    incumbent: dict[str, Any] | None, test_x: np.ndarray, test_y: np.ndarray, classes: list[str],
    load_classifier: Any, predict_probabilities: Any,
) -> dict[str, Any] | None:
    """The current model's metrics on the candidate's test split, over the candidate's classes.

    Test clips of a class the current model never learned count as its mistakes.
    """
    if incumbent is None:
        return None
    model = load_classifier(Path(incumbent["model_path"]))
    its_classes: list[str] = incumbent["classes"]
    probabilities = predict_probabilities(model, test_x)
    priority = incumbent.get("priority_class")
    priority_index = its_classes.index(priority) if priority in its_classes else None
    own_labels = apply_priority_threshold(probabilities, priority_index, incumbent.get("priority_threshold"))
    mapped = np.array([classes.index(its_classes[i]) if its_classes[i] in classes else -1 for i in own_labels],
                      dtype=np.int64)
    return classification_metrics(test_y, mapped, classes)
