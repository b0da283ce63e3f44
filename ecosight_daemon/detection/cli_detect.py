"""`ecosight-daemon detect`: recordings (files or folders) through the current model, the
events written into --out in every format, progress on a terminal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from ecosight_daemon.audio import READABLE_EXTENSIONS, is_audio_name
from ecosight_daemon.config import Settings
from ecosight_daemon.detection.clock import UTC, RecordingClock
from ecosight_daemon.detection.outputs import (
    RUN_JSON,
    Detection,
    run_summary,
    unique_table_names,
    write_audacity_labels,
    write_detections_csv,
    write_raven_table,
)
from ecosight_daemon.detection.recording_reader import ReaderInterrupted, RecordingReader, finish
from ecosight_daemon.detection.recording_run import RecordingResult, detect_recording
from ecosight_daemon.detection.scoring import Scoring, current_scoring
from ecosight_daemon.detection.stream import HeaderLimits, read_header
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError, EcosightError
from ecosight_daemon.util.durable import write_json
from ecosight_daemon.util.folder_walk import walk_files
from ecosight_daemon.util.printable import printable
from ecosight_daemon.util.progress import ProgressReporter

logger = logging.getLogger(__name__)
MAX_FOLDER_DEPTH = 16  # below a folder given to detect
def parse_start_time(text: str | None, zone: tzinfo) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise EcosightError(f"--start-time {text!r}: expected ISO 8601, like 2026-05-01T06:00:00") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def recordings_in(paths: list[Path]) -> list[Path]:
    """Files as given, folders searched recursively for WAV/FLAC/OGG (hidden names skipped)."""

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(Path(entry.path) for entry in walk_files(
                path, lambda name: is_audio_name(name, READABLE_EXTENSIONS), MAX_FOLDER_DEPTH)
                if entry.is_file()))
        elif path.exists():
            found.append(path)
        else:
            raise EcosightError(f"{path}: no such file or folder")
    return found


RecordingDone = Callable[[RecordingResult, WindowTrace, Scoring], None]


def detect_paths(settings: Settings, paths: list[Path], out_dir: Path, zone: tzinfo = UTC,
                 start_time: datetime | None = None, on_recording: RecordingDone | None = None) -> dict[str, Any]:
    """Detect in every recording under `paths`, write the outputs into `out_dir`, return run.json's content.

    detections.csv and run.json are rewritten (atomically) after each recording, so a run
    stopped part-way keeps what it finished; a recording that fails is recorded with its
    reason and the run goes on. `on_recording`, if given, gets each readable recording's
    result and window trace (to queue review items)."""
    from ecosight_daemon.embedding.loader import load_embedder
    from ecosight_daemon.versions.registry import ModelRegistry
    from ecosight_daemon.versions.retrain_lock import recover_at_start

    recordings = recordings_in(paths)
    registry = ModelRegistry(settings.paths.models_dir)
    recover_at_start(registry)
    embedder = load_embedder(settings.embedding.yamnet_handle, settings.paths.models_dir, settings.embedding.runtime,
                             settings.embedding.yamnet_sha256)
    scoring = current_scoring(registry, embedder, settings.detection.background_class,
                              settings.detection.window_patches)
    if scoring is None:
        raise EcosightError(f"no trained model in {settings.paths.models_dir}; run `ecosight-daemon retrain` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = RecordingReader(settings.audio.max_decode_s)
    limits = HeaderLimits(settings.detection.min_sample_rate, settings.detection.max_hours)
    try:
        return _detect_all(settings, recordings, out_dir, zone, start_time, on_recording, scoring, embedder, reader,
                           limits)
    finally:
        reader.close()


def _detect_all(settings: Settings, recordings: list[Path], out_dir: Path, zone: tzinfo, start_time: datetime | None,
                on_recording: RecordingDone | None, scoring: Scoring, embedder: Embedder, reader: RecordingReader,
                limits: HeaderLimits) -> dict[str, Any]:
    started = datetime.now(UTC)
    results: list[RecordingResult] = []
    detections: list[Detection] = []
    lengths = {path: _header_seconds(reader, path, limits) for path in recordings}
    total = sum(seconds for seconds in lengths.values() if isinstance(seconds, float))
    table_names = unique_table_names(recordings)
    progress = ProgressReporter("detecting (s of audio)")
    done_before = 0.0
    for path in recordings:
        def report(seconds: float, base: float = done_before) -> None:
            progress(int(base + seconds), int(total))

        trace = WindowTrace(scoring.classes, scoring.background, scoring.scorer().window_s)
        known = lengths[path]
        if isinstance(known, str):
            result = RecordingResult(path, RecordingClock(None, "none"), error=known)
        else:
            result = _one_recording(path, embedder, scoring, reader, zone, start_time, report,
                                    trace if on_recording else None, limits)
            done_before += known
        if on_recording is not None and not result.error:
            on_recording(result, trace, scoring)
        if result.error:
            logger.warning("%s: skipped: %s", printable(path), result.error)
        elif result.truncated:
            logger.warning("%s: %s", printable(path), result.truncated)
        if result.clock.note:
            logger.warning("%s: clock: %s", printable(path), result.clock.note)
        found = [Detection(str(path), event, result.clock.start_utc, scoring.version) for event in result.events]
        if found:
            write_raven_table(out_dir, path, found, table_names[path])
            write_audacity_labels(out_dir, path, found, table_names[path])
        detections.extend(found)
        results.append(result)
        summary = _write_run(out_dir, scoring, results, detections, started)
    if not recordings:
        summary = _write_run(out_dir, scoring, results, detections, started)
    return summary


def _one_recording(path: Path, embedder: Embedder, scoring: Scoring, reader: RecordingReader, zone: tzinfo,
                   start_time: datetime | None, report: Callable[[float], None], trace: WindowTrace | None,
                   limits: HeaderLimits) -> RecordingResult:
    """One recording's result; whatever goes wrong inside is its error, never the run's end."""
    try:
        return detect_recording(path, embedder, scoring.scorer, scoring.classes, scoring.background, reader, zone,
                                start_time, report, trace, limits)
    except Exception as exc:  # one recording, whatever it holds, never stops the run
        logger.exception("%s: detection failed", printable(path))
        return RecordingResult(path, RecordingClock(None, "none"), error=f"detection failed ({type(exc).__name__}: "
                                                                         f"{exc}); the other recordings go on")


def _write_run(out_dir: Path, scoring: Scoring, results: list[RecordingResult], detections: list[Detection],
               started: datetime) -> dict[str, Any]:
    write_detections_csv(out_dir, detections)
    summary = run_summary(scoring.version, scoring.parameters, [r.summary() for r in results], started,
                          sum(r.seconds_analysed for r in results))
    write_json(out_dir / RUN_JSON, summary)
    return summary


def _header_seconds(reader: RecordingReader, path: Path, limits: HeaderLimits) -> float | str:
    """The recording's length, or why it cannot be analysed."""
    try:
        header, _ = finish(read_header(reader, path, limits))
    except (AudioDecodeError, ReaderInterrupted) as exc:
        return str(exc)
    return header.duration_s
