"""One retrain, end to end: snapshot -> training child -> gate -> version -> promotion -> log,
then the version's extras (report pictures, end-to-end SavedModel) off the critical path.

Runs in the caller's process (the CLI or the daemon) without TensorFlow; the model
is trained in a spawned child with a time limit. Only this module's `retrain` writes
under models/versions and promotes, and it holds the retrain lock while it does.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.artifacts.split_rule import Split
from ecosight_daemon.config import Settings
from ecosight_daemon.embedding.onnx_conversion import BODY_FILE, body_folder, intact
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.pooling import AudiosetHead, needs_audioset_head
from ecosight_daemon.store.database import Database
from ecosight_daemon.training.dataset import Snapshot, SnapshotOptions, take_snapshot
from ecosight_daemon.training.detector_training import detector_job, sentinel_summary
from ecosight_daemon.training.evaluation import class_recall
from ecosight_daemon.training.gate import GateDecision, GatePolicy, PairedPredictions, gate, judge_detection
from ecosight_daemon.training.input_digest import training_input_digest
from ecosight_daemon.training.job_data import write_job_data
from ecosight_daemon.training.process_handle import TrainingProcess, TrainingProcessFailed
from ecosight_daemon.training.protocol import FitJob, IncumbentModel, Progress, TrainingResult
from ecosight_daemon.training.recipe import TrainingRecipe
from ecosight_daemon.util.digest import sha256_of
from ecosight_daemon.util.durable import fsync_path, fsync_tree, read_json, write_json
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retention import prune_versions
from ecosight_daemon.versions.retrain_lock import retrain_lock
from ecosight_daemon.versions.retraining_log import LOG_FILE as LOG_FILE_NAME
from ecosight_daemon.versions.retraining_log import RetrainOutcome, RetrainStatus, metrics_summary

logger = logging.getLogger(__name__)

def snapshot_options(settings: Settings) -> SnapshotOptions:
    t = settings.training
    return SnapshotOptions(t.min_class_files, (t.split[0], t.split[1], t.split[2]), t.group_patterns, t.pooling)


def gate_policy(settings: Settings) -> GatePolicy:
    p = settings.promotion
    return GatePolicy(settings.training.priority_class, p.macro_f1_tolerance, p.min_macro_f1,
                      p.min_priority_recall, p.significance)


def trained_hashes(registry: ModelRegistry) -> set[str]:
    """Content hashes the most recent finished training run learned from."""
    versions = registry.versions()
    if not versions:
        return set()
    manifest = registry.version_dir(versions[-1]["version"]) / files.MANIFEST
    with manifest.open() as handle:
        return {row["sha256"] for row in csv.DictReader(handle)}


def retrain(
    settings: Settings,
    store: Database,
    trigger: str,
    force: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    log_level: str = "INFO",
    process: TrainingProcess | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RetrainOutcome:
    """Train, evaluate, gate and (maybe) promote; every attempt is logged.

    `process` is a training process started earlier (TensorFlow already imported);
    without one, a new one is started here. Either way it is closed before this returns.
    """
    registry = ModelRegistry(settings.paths.models_dir)
    registry.ensure()
    started, started_wall = time.monotonic(), time.time()
    if process is None or not process.ready_for_a_job():
        if process is not None:
            process.close()
        process = TrainingProcess(log_level)
    try:
        with retrain_lock(settings.paths.models_dir):
            registry.recover()
            try:
                outcome = _attempt(settings, store, registry, trigger, force, should_stop, process, on_progress)
            except Exception as exc:  # disk full, a corrupt file...: record it, keep models/ as it was
                logger.exception("retrain (%s) failed", trigger)
                registry.remove_stale_staging()
                outcome = RetrainOutcome(None, False, f"retrain failed: {type(exc).__name__}: {exc}", trigger)
            outcome.seconds = time.monotonic() - started
            outcome.started_at = started_wall
            try:
                registry.append_log(outcome.log_entry())
            except OSError as exc:  # disk full: the attempt is still reported to the caller
                logger.error("cannot record this attempt in %s: %s", LOG_FILE_NAME, exc)
            level = logging.ERROR if outcome.status is RetrainStatus.FAILED else logging.INFO
            logger.log(level, "retrain (%s) %s: %s", trigger, outcome.status.value, outcome.reason)
            if outcome.version is not None:
                write_extras(registry, outcome.version, process, settings.training.time_limit_s, should_stop)
            try:
                prune_versions(registry, settings.promotion.keep_versions)
            except OSError as exc:  # a full or failing disk: pruned after the next attempt
                logger.warning("cannot prune old versions: %s", exc)
    finally:
        process.close()
    return outcome


def converted_body(settings: Settings, model_id: str | None) -> str:
    """The verified ONNX body of the cache's model, if the daemon converted one ("": none)."""
    folder = body_folder(settings.paths.models_dir, model_id or "")
    return str(folder / BODY_FILE) if model_id and intact(folder, model_id) else ""


def write_extras(registry: ModelRegistry, version: str, process: TrainingProcess, time_limit_s: float,
                 should_stop: Callable[[], bool]) -> None:
    """The report and the end-to-end SavedModel of a finished version.

    They come after the promotion because nothing decides on them and they take
    seconds. The export appears whole or not at all; a failure is logged, never fatal.
    """
    from ecosight_daemon.training.report import write_report

    folder = registry.version_dir(version)
    try:
        metadata = read_json(folder / files.METADATA)
        history = read_json(folder / files.HISTORY_JSON, default={})
        write_report(folder, metadata, read_json(folder / files.METRICS), history,
                     metadata.get("incumbent_metrics"))
    except (OSError, ValueError) as exc:
        logger.error("version %s: cannot write its report: %s", version, exc)
    partial = folder / files.EXPORT_PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    try:
        process.export(partial, time_limit_s, should_stop, version)
        fsync_tree(partial)
        os.rename(partial, folder / files.EXPORT_DIR)
        fsync_path(folder)
    except (TrainingProcessFailed, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        logger.error("version %s: no end-to-end export (%s); the Keras model is unaffected", version, exc)


def _attempt(
    settings: Settings, store: Database, registry: ModelRegistry, trigger: str, force: bool,
    should_stop: Callable[[], bool], process: TrainingProcess, on_progress: Callable[[Progress], None] | None,
) -> RetrainOutcome:
    head = audioset_head_for(store, settings) if needs_audioset_head(settings.training.pooling) else None
    snapshot = take_snapshot(store, snapshot_options(settings), head)
    new_samples = len({s.sha256 for s in snapshot.samples} - trained_hashes(registry))
    outcome = RetrainOutcome(None, False, "", trigger, force, samples=snapshot.counts(), new_samples=new_samples)
    if len(snapshot.classes) < 2:
        outcome.reason = (f"need at least 2 classes with >= {settings.training.min_class_files} embedded "
                          f"files, have {len(snapshot.classes)}; add audio to the class folders")
        return outcome
    if len(snapshot.indices(Split.TRAIN)) == 0:
        outcome.reason = "the training split is empty; add recordings from more sources"
        return outcome

    incumbent = _incumbent_spec(registry, snapshot)
    outcome.replaced_version = incumbent.version if incumbent else None
    outcome.input_digest = training_input_digest(snapshot, TrainingRecipe.from_settings(settings.training),
                                                 gate_policy(settings))
    if not force and (same := _same_as_newest(registry, outcome.input_digest)) is not None:
        outcome.status = RetrainStatus.UNCHANGED
        outcome.reason = (f"nothing changed since {same}: the same samples, labels, splits and settings, and the "
                          "same current model; training again would give the same model and the same decision, "
                          "so no new version was made")
        return outcome
    version = registry.next_version()
    staging = registry.staging_dir(version)
    write_job_data(staging, snapshot.features, snapshot.labels(), [s.split.value for s in snapshot.samples],
                   [s.group for s in snapshot.samples], head)
    job = FitJob(str(staging), snapshot.classes, snapshot.pooling, TrainingRecipe.from_settings(settings.training),
                 incumbent, settings.embedding.yamnet_handle, converted_body(settings, store.clips.model_id),
                 settings.detection.window_patches)
    result = process.train(job, settings.training.time_limit_s, should_stop, on_progress)
    if not result.ok:
        shutil.rmtree(staging, ignore_errors=True)
        outcome.reason = f"training did not finish: {result.error or 'unknown error'}"
        return outcome

    paired = None
    if result.incumbent_predictions is not None:
        paired = PairedPredictions(*(np.array(values, dtype=np.int64) for values in
                                     (result.test_labels, result.candidate_predictions, result.incumbent_predictions)))
    outcome.event_detector = _event_detector(settings, snapshot, staging, process, should_stop, on_progress,
                                             registry.version_dir(incumbent.version) if incumbent else None)
    if should_stop():  # stopped while the detector trained: a version without it is never promoted on the way out
        shutil.rmtree(staging, ignore_errors=True)
        outcome.reason = "training did not finish: stopped on request"
        return outcome
    policy = gate_policy(settings)
    decision = judge_detection(gate(result.candidate_metrics, result.incumbent_metrics, policy, paired),
                               outcome.event_detector.get("test_split"), policy.priority_class,
                               settings.detection.false_alarms_per_hour, policy.significance)
    if force and not decision.promote:
        decision = GateDecision(True, f"forced by operator (gate said: {decision.reason})", "forced by operator",
                                decision.statistics)
    outcome.gate = decision.as_dict()
    outcome.version, outcome.metrics = version, result.candidate_metrics
    outcome.incumbent_metrics = result.incumbent_metrics
    outcome.promoted = decision.promote
    budget = settings.detection.false_alarms_per_hour
    outcome.reason = decision.reason + sentinel_summary(outcome.event_detector, budget)
    outcome.status = RetrainStatus.PROMOTED if decision.promote else RetrainStatus.REJECTED
    _write_version_files(staging, version, snapshot, settings, store, result, outcome)
    registry.finalize(version)
    if decision.promote:
        registry.promote(version)
    return outcome


def _event_detector(settings: Settings, snapshot: Snapshot, staging: Path, process: TrainingProcess,
                    should_stop: Callable[[], bool], on_progress: Callable[[Progress], None] | None,
                    incumbent_dir: Path | None) -> dict[str, Any]:
    """The version's event detector, trained by the training process after its fit
    (training/detector_training.py); its failure costs the version only its detector."""
    if not settings.detection.train_detector:
        return {"skipped": "[detection] train_detector = false"}
    figures = process.train_detector(detector_job(settings, snapshot, staging, incumbent_dir),
                                     settings.training.time_limit_s, should_stop, on_progress)
    if "skipped" in figures:
        logger.info("version made without an event detector: %s", figures["skipped"])
    return figures


def _same_as_newest(registry: ModelRegistry, digest: str) -> str | None:
    """The newest version ("v0003 (promoted)") when it was trained on inputs with this digest
    and judged against the model current now (or is it); None otherwise."""
    newest = registry.versions()[-1:]
    if not newest or newest[0].get("training_input_sha256") != digest:
        return None
    metadata = newest[0]
    if registry.current_version() not in (metadata["version"], metadata.get("replaced_version")):
        return None
    return f"{metadata['version']} ({metadata.get('status')})"


def audioset_head_for(store: Database, settings: Settings) -> AudiosetHead:
    """YAMNet's AudioSet layer for the cache's model; loads YAMNet once if the cache lacks it."""
    head = store.clips.audioset_head()
    if head is None:
        from ecosight_daemon.embedding.loader import load_embedder
        from ecosight_daemon.ingest.audioset_layer import remember_audioset_head

        embedder = load_embedder(settings.embedding.yamnet_handle, settings.paths.models_dir,
                                 settings.embedding.runtime, settings.embedding.yamnet_sha256)
        if embedder.model_id != store.clips.model_id:
            raise EcosightError(f"the cache holds embeddings of {store.clips.model_id} but "
                                f"{settings.embedding.yamnet_handle} is {embedder.model_id}; "
                                "run `ecosight-daemon embed` first")
        head = remember_audioset_head(store, embedder)
    return head


def _incumbent_spec(registry: ModelRegistry, snapshot: Snapshot) -> IncumbentModel | None:
    """The current model, if it can be compared on this snapshot's features."""
    current = registry.current_metadata()
    path = registry.current_model_path()
    if current is None or path is None:
        return None
    twin = registry.version_dir(current["version"]) / files.HOLDOUT_MODEL
    path = twin if twin.is_file() else path  # judged by the model that never saw the test split
    if current.get("embedding_model_id") != snapshot.embedding_model_id or current.get("pooling") != snapshot.pooling:
        logger.warning("the current model %s used other embeddings or pooling; the candidate must clear "
                       "the floors instead of beating it", current.get("version"))
        return None
    return IncumbentModel(current["version"], str(path), current)


def _write_version_files(
    folder: Path, version: str, snapshot: Snapshot, settings: Settings, store: Database,
    result: TrainingResult, outcome: RetrainOutcome,
) -> None:
    metrics = dict(result.candidate_metrics)
    with (folder / files.MANIFEST).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256", "class", "group", "split"])
        writer.writerows([s.path, s.sha256, s.label, s.group, s.split.value] for s in snapshot.samples)
    write_json(folder / files.CLASS_NAMES, snapshot.classes)
    write_json(folder / files.METRICS, metrics)
    t = settings.training
    metadata = {
        "version": version,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": outcome.status.value,
        "decision_reason": outcome.reason,
        "trigger_reason": outcome.trigger,
        "replaced_version": outcome.replaced_version,
        "classes": snapshot.classes,
        "num_classes": len(snapshot.classes),
        "sample_counts": snapshot.counts(),
        "new_samples": outcome.new_samples,
        "excluded_classes": snapshot.excluded_classes,
        "warnings": snapshot.warnings,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "test_metrics": metrics_summary(metrics),
        "priority_class": t.priority_class,
        "priority_recall": class_recall(metrics, t.priority_class),
        "priority_threshold": result.priority_threshold,
        "threshold": result.threshold,
        "epochs_run": result.epochs_run,
        "pooling": snapshot.pooling,
        "input_dim": int(snapshot.features.shape[1]),
        "training_settings": TrainingRecipe.from_settings(t).as_dict(),
        "model_fitted_on": ("every sample (train, validation and test); test figures are from a twin fitted "
                            "without the test split" if t.head == "logistic" else "the training split"),
        "gate": outcome.gate,
        "embedding_model_id": snapshot.embedding_model_id,
        "embedding_fingerprint": store.clips.model_fingerprint(snapshot.embedding_model_id),
        "model_sha256": sha256_of(folder / files.MODEL),
        "incumbent_metrics": outcome.incumbent_metrics,
        "training_input_sha256": outcome.input_digest,
        "event_detector": outcome.event_detector,
    }
    (folder / files.JOB_DATA).unlink(missing_ok=True)
    write_json(folder / files.METADATA, metadata)  # last: a version folder with metadata is complete
