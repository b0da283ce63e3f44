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
from .features import AudiosetHead
from .logistic_head import fit_logistic, out_of_fold_probabilities

logger = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
HOLDOUT_MODEL = "holdout_model.keras"  # the twin that never saw the test split; the next gate uses it


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


def write_job(folder: Path, features: np.ndarray, labels: np.ndarray, splits: list[str], groups: list[str],
              spec: dict[str, Any], head: AudiosetHead | None = None) -> JobFiles:
    files = JobFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = {} if head is None else {"audioset_kernel": head.kernel, "audioset_bias": head.bias}
    np.savez(files.data, features=features, labels=labels,
             splits=np.array([SPLIT_CODES[s] for s in splits], dtype=np.int8), groups=np.array(groups), **extra)
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


@dataclass
class FittedHead:
    """What one recipe produced: the model to ship and the twin the gate judges.

    `holdout_model` never saw the test split; `model` may have (the logistic head is
    refitted on every sample once its test figures are taken). Both are the same
    object when the recipe does not refit.
    """

    model: Any
    holdout_model: Any
    threshold: float | None
    threshold_info: dict[str, Any]
    test_probabilities: np.ndarray
    history: dict[str, list[float]]
    epochs_run: int


def run_job(files: JobFiles, should_stop: Any) -> tuple[dict[str, Any], Callable[[Path], None] | None]:
    """Fit and evaluate; returns the result and a function that exports the fitted model."""
    from .training import export_end_to_end, load_classifier, predict_probabilities, save_classifier

    spec = json.loads(files.spec.read_text())
    data = np.load(files.data)
    features, labels, splits = data["features"], data["labels"], data["splits"]
    groups = data["groups"]
    head = AudiosetHead(data["audioset_kernel"], data["audioset_bias"]) if "audioset_kernel" in data else None
    test = splits == 2
    classes: list[str] = spec["classes"]
    logger.info("training a %s head on %d clips (%d validation, %d test), %d classes", spec["head"],
                int((splits == 0).sum()), int((splits == 1).sum()), int(test.sum()), len(classes))
    pause.point("training")
    if spec["head"] == "logistic":
        fitted = fit_logistic_head(features, labels, splits, groups, classes, spec)
    else:
        fitted = fit_keras_head(features, labels, splits, classes, spec, should_stop)
    if fitted is None or should_stop():  # a logistic fit is not interruptible: checked after it
        return {"ok": False, "error": "stopped on request"}, None

    priority_index = classes.index(spec["priority_class"]) if spec["priority_class"] in classes else None
    candidate_labels = apply_priority_threshold(fitted.test_probabilities, priority_index, fitted.threshold)
    candidate = classification_metrics(labels[test], candidate_labels, classes)
    incumbent_labels = incumbent_predictions(spec.get("incumbent"), features[test], classes, load_classifier,
                                             predict_probabilities)
    incumbent = None if incumbent_labels is None else classification_metrics(labels[test], incumbent_labels,
                                                                              classes)

    save_classifier(fitted.model, files.folder / "model.keras")
    if fitted.holdout_model is not fitted.model:
        save_classifier(fitted.holdout_model, files.folder / HOLDOUT_MODEL)
    (files.folder / "training_history.json").write_text(json.dumps(fitted.history, indent=2))
    # Written for tools that expect the old file; this program never loads a pickle.
    (files.folder / "training_history.pkl").write_bytes(pickle.dumps(fitted.history))

    def export(target: Path) -> None:
        export_end_to_end(spec["export_handle"], fitted.model, classes, spec["pooling"], priority_index,
                          fitted.threshold, target, head)

    return {
        "ok": True,
        "epochs_run": fitted.epochs_run,
        "history": fitted.history,
        "priority_threshold": fitted.threshold,
        "threshold": fitted.threshold_info,
        "candidate_metrics": candidate,
        "incumbent_metrics": incumbent,
        "test_labels": [int(v) for v in labels[test]],
        "candidate_predictions": [int(v) for v in candidate_labels],
        "incumbent_predictions": None if incumbent_labels is None else [int(v) for v in incumbent_labels],
    }, export


def fit_logistic_head(features: np.ndarray, labels: np.ndarray, splits: np.ndarray, groups: np.ndarray,
                      classes: list[str], spec: dict[str, Any]) -> FittedHead:
    """Threshold from out-of-fold scores on train+validation, a twin fitted there for the
    test figures, then the shipped model refitted on every sample."""
    from .training import keras_from_logistic

    c = float(spec["logistic_c"])
    learn = splits != 2
    test = splits == 2
    threshold, threshold_info = None, {"note": f"{spec['priority_class']} is not among the trained classes"}
    scores = out_of_fold_probabilities(features[learn], labels[learn], groups[learn], len(classes), c)
    if spec["priority_class"] in classes:
        if scores is None:
            threshold_info = {"note": "too few recordings for out-of-fold scores; plain argmax"}
        else:
            choice = choose_priority_threshold(scores, labels[learn], classes.index(spec["priority_class"]),
                                               spec["priority_recall_target"], spec["priority_min_precision"])
            threshold, threshold_info = choice.threshold, {**choice.as_dict(), "scored_on": "out-of-fold"}
    twin = fit_logistic(features[learn], labels[learn], len(classes), c)
    shipped = fit_logistic(features, labels, len(classes), c) if test.any() else twin
    holdout_model = keras_from_logistic(twin)
    model = keras_from_logistic(shipped) if shipped is not twin else holdout_model
    history = _one_fit_history(shipped.probabilities(features), labels, scores, labels[learn])
    return FittedHead(model, holdout_model, threshold, threshold_info, twin.probabilities(features[test]), history, 1)


def _one_fit_history(fitted: np.ndarray, labels: np.ndarray, out_of_fold: np.ndarray | None,
                     out_of_fold_labels: np.ndarray) -> dict[str, list[float]]:
    """The old history file's keys for a fit with no epochs: one entry, the converged fit's
    loss and accuracy on what it learned from, and the out-of-fold ones as "validation"."""
    def loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1.0))))

    history = {"loss": [loss(fitted, labels)], "accuracy": [float(np.mean(fitted.argmax(axis=1) == labels))]}
    if out_of_fold is not None:
        history["val_loss"] = [loss(out_of_fold, out_of_fold_labels)]
        history["val_accuracy"] = [float(np.mean(out_of_fold.argmax(axis=1) == out_of_fold_labels))]
    return history


def fit_keras_head(features: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: list[str],
                   spec: dict[str, Any], should_stop: Any) -> FittedHead | None:
    """Gradient-trained head with hidden layers: early stopping and threshold on validation."""
    from .training import ClassifierParams, fit_classifier, predict_probabilities

    train, val, test = (splits == 0), (splits == 1), (splits == 2)
    params = ClassifierParams(**{**spec["params"], "hidden_units": tuple(spec["params"]["hidden_units"])})
    fit = fit_classifier(features[train], labels[train], features[val], labels[val], len(classes), params,
                         should_stop)
    if fit.stopped_early_by_request:
        return None
    threshold, threshold_info = None, {"note": f"{spec['priority_class']} is not among the trained classes"}
    if spec["priority_class"] in classes:
        choice = choose_priority_threshold(predict_probabilities(fit.model, features[val]), labels[val],
                                           classes.index(spec["priority_class"]), spec["priority_recall_target"],
                                           spec["priority_min_precision"])
        threshold, threshold_info = choice.threshold, {**choice.as_dict(), "scored_on": "validation split"}
    return FittedHead(fit.model, fit.model, threshold, threshold_info,
                      predict_probabilities(fit.model, features[test]), fit.history, fit.epochs_run)


def incumbent_predictions(
    incumbent: dict[str, Any] | None, test_x: np.ndarray, classes: list[str],
    load_classifier: Any, predict_probabilities: Any,
) -> np.ndarray | None:
    """The current model's labels for the candidate's test clips, as the candidate's class indices.

    Test clips of a class the current model never learned count as its mistakes (-1).
    """
    if incumbent is None:
        return None
    model = load_classifier(Path(incumbent["model_path"]))
    its_classes: list[str] = incumbent["classes"]
    probabilities = predict_probabilities(model, test_x)
    priority = incumbent.get("priority_class")
    priority_index = its_classes.index(priority) if priority in its_classes else None
    own_labels = apply_priority_threshold(probabilities, priority_index, incumbent.get("priority_threshold"))
    return np.array([classes.index(its_classes[i]) if its_classes[i] in classes else -1 for i in own_labels],
                    dtype=np.int64)
