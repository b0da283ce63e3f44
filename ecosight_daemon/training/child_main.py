"""The training process's own code: it runs in a process started with `spawn`, fits one
job and writes its models into the job's folder and nothing else. TensorFlow lives only
here, so repeated fits cannot leak memory into the long-running daemon, and a hung run
can be killed without harming anything the operators use.

The parent's side is `process_handle.TrainingProcess`; the messages are in
`protocol`.
"""

from __future__ import annotations

import json
import logging
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.event_detector import EventDetector
from ecosight_daemon.artifacts.priority_rule import apply_priority_threshold
from ecosight_daemon.embedding.tf_start_up import start_up_notes_hidden
from ecosight_daemon.pooling import AudiosetHead
from ecosight_daemon.training.evaluation import classification_metrics
from ecosight_daemon.training.heads import FittedHead, fit_keras_head, fit_logistic_head
from ecosight_daemon.training.job_data import TEST, TRAIN, VALIDATION, read_job_data
from ecosight_daemon.training.protocol import (
    DetectorJob,
    DetectorTrained,
    Exported,
    ExportFailed,
    ExportRequest,
    FitJob,
    Fitted,
    IncumbentModel,
    Progress,
    ToWorker,
    TrainingResult,
)
from ecosight_daemon.util import pause

logger = logging.getLogger(__name__)

Export = Callable[[Path, str], None]  # (target folder, version)


def worker_main(connection: Connection, log_level: str) -> None:
    """Entry point of the spawned process: import TensorFlow, then serve one job.

    The parent may start this process long before it has a job (a warm process), so
    the slow import is paid while nothing waits for it.
    """
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("absl", "tensorflow"):  # SavedModel export chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    with start_up_notes_hidden():
        from ecosight_daemon.training import keras_head as training  # the slow part: TensorFlow

        training.warm_up()

    message = _receive(connection)
    if not isinstance(message, FitJob):
        return
    export = None
    try:
        result, export = run_job(message, stop.is_set, connection.send)
    except Exception as exc:
        logger.exception("training failed")
        result = TrainingResult.failed(f"{type(exc).__name__}: {exc}")
    connection.send(Fitted(result))
    _serve_requests(connection, export)


def _receive(connection: Connection) -> ToWorker | None:
    try:
        message: ToWorker = connection.recv()
    except EOFError:
        return None
    return message


def _serve_requests(connection: Connection, export: Export | None) -> None:
    """After the fit: the version's event detector and its exports, one request at a time."""
    while isinstance(request := _receive(connection), (ExportRequest, DetectorJob)):
        if isinstance(request, DetectorJob):
            connection.send(DetectorTrained(_train_detector(request, connection)))
            continue
        try:
            if export is None:
                raise RuntimeError("no trained model to export")
            export(Path(request.target), request.version)
            connection.send(Exported())
        except Exception as exc:
            logger.exception("export failed")
            connection.send(ExportFailed(f"{type(exc).__name__}: {exc}"))
    # Shutdown, or the parent is gone


def _train_detector(job: DetectorJob, connection: Connection) -> dict[str, Any]:
    """Its failure costs the version only its detector, never the version."""
    from ecosight_daemon.training.detector_training import train_detector_into

    try:
        return train_detector_into(job, lambda what: connection.send(Progress(what)))
    except Exception as exc:  # recorded in the version's metadata; the clip model stands
        logger.exception("event detector not trained")
        return {"skipped": f"{type(exc).__name__}: {exc}"}


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_job(job: FitJob, should_stop: Callable[[], bool],
            report: Callable[[Progress], None] = lambda progress: None) -> tuple[TrainingResult, Export | None]:
    """Fit and evaluate; returns the result and a function that exports the fitted model."""
    from ecosight_daemon.training.keras_head import export_end_to_end, save_classifier
    from ecosight_daemon.training.onnx_export import PATCHES_MODEL, export_patches_model

    folder = Path(job.folder)
    data = read_job_data(folder)
    features, labels, splits, groups, head = data.features, data.labels, data.splits, data.groups, data.head
    test = splits == TEST
    classes, recipe = job.classes, job.recipe
    logger.info("training a %s head on %d clips (%d validation, %d test), %d classes", recipe.head,
                int((splits == TRAIN).sum()), int((splits == VALIDATION).sum()), int(test.sum()), len(classes))
    pause.point("training")
    fitted: FittedHead | None
    if recipe.head == "logistic":
        fitted = fit_logistic_head(features, labels, splits, groups, classes, recipe, report)
    else:
        fitted = fit_keras_head(features, labels, splits, classes, recipe, should_stop, report)
    if fitted is None or should_stop():  # a logistic fit is not interruptible: checked after it
        return TrainingResult.failed("stopped on request"), None

    priority_index = classes.index(recipe.priority_class) if recipe.priority_class in classes else None
    candidate_labels = apply_priority_threshold(fitted.test_probabilities, priority_index, fitted.threshold)
    incumbent_labels = incumbent_predictions(job.incumbent, features[test], classes)

    save_classifier(fitted.model, folder / files.MODEL)
    if fitted.arrays is not None:
        fitted.arrays.save(folder / files.CLASSIFIER_ARRAYS)
    if fitted.holdout_model is not fitted.model:
        save_classifier(fitted.holdout_model, folder / files.HOLDOUT_MODEL)
    (folder / files.HISTORY_JSON).write_text(json.dumps(fitted.history, indent=2))
    # Written for tools that expect the old file; this program never loads a pickle.
    (folder / files.HISTORY_PICKLE).write_bytes(pickle.dumps(fitted.history))

    def export(target: Path, version: str) -> None:
        export_end_to_end(job.export_handle, fitted.model, classes, job.pooling, priority_index,
                          fitted.threshold, target, head)
        if not job.onnx_body:
            logger.info("no ONNX export: the daemon has no converted YAMNet body (runtime tensorflow)")
            return
        try:
            worst = export_patches_model(Path(job.onnx_body), fitted.model, classes, job.pooling, priority_index,
                                         fitted.threshold, target, head, version, job.window_patches)
            logger.info("exported %s (largest probability difference in its check: %.1e)", PATCHES_MODEL, worst)
        except Exception:  # the SavedModel stands on its own
            logger.exception("no ONNX export of the patches -> probabilities model")
            return
        export_event_detector(target, version, head)

    return TrainingResult(
        ok=True,
        epochs_run=fitted.epochs_run,
        history=fitted.history,
        priority_threshold=fitted.threshold,
        threshold=fitted.threshold_info,
        candidate_metrics=classification_metrics(labels[test], candidate_labels, classes),
        incumbent_metrics=None if incumbent_labels is None else classification_metrics(labels[test],
                                                                                      incumbent_labels, classes),
        test_labels=[int(v) for v in labels[test]],
        candidate_predictions=[int(v) for v in candidate_labels],
        incumbent_predictions=None if incumbent_labels is None else [int(v) for v in incumbent_labels],
    ), export


def incumbent_predictions(incumbent: IncumbentModel | None, test_x: np.ndarray,
                          classes: list[str]) -> np.ndarray | None:
    """The current model's labels for the candidate's test clips, as the candidate's class
    indices; test clips of a class it never learned count as its mistakes (-1)."""
    if incumbent is None:
        return None
    from ecosight_daemon.artifacts.published_model import PublishedModel

    return PublishedModel.load(Path(incumbent.model_path), incumbent.metadata).labels_in(classes, test_x)


def export_event_detector(target: Path, version: str, head: AudiosetHead | None) -> None:
    """The version's event detector (beside `target`, the export being made) for devices too."""
    from ecosight_daemon.training.detector_export import DETECTOR_MODEL, write_detector_files
    from ecosight_daemon.training.onnx_export import FRONT_END_FILE

    detector_file = target.parent / files.EVENT_DETECTOR
    if not detector_file.is_file():
        return
    if head is None:
        logger.info("no ONNX export of the event detector: this version's pooling keeps no AudioSet layer")
        return
    try:
        worst = write_detector_files(target, FRONT_END_FILE, EventDetector.load(detector_file), head, version)
        logger.info("exported %s (largest margin difference in its check: %.1e)", DETECTOR_MODEL, worst)
    except Exception:  # the other device files stand on their own
        logger.exception("no ONNX export of the event detector")
