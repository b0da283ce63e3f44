"""The daemon's long recordings: recordings_dir looked at every scan_interval_s, a file
taken once its size and mtime held still for settle_s, then analysed a step at a time on
the loop (recording_job.py), scored from the cache, and re-scored from the cache whenever
the current version changes (a promotion, a rollback). One step is one chunk (~61 s of
audio) or one cached chunk re-scored, so signals and status are answered between steps.

Alerts go out when a recording is scored for the first time; a re-score replaces its
events quietly (they were alerted on already, or are the new model's second opinion).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ecosight_daemon.audio import is_audio_name, is_ignored_name
from ecosight_daemon.cache.store import EmbeddingStore
from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.alerts import Alerts, alert_payload
from ecosight_daemon.detection.cached_scoring import score_cached
from ecosight_daemon.detection.cli_detect import RECORDING_EXTENSIONS, parse_zone
from ecosight_daemon.detection.events import Event
from ecosight_daemon.detection.recording_job import RecordingChanged, run_recording
from ecosight_daemon.detection.scoring import Scoring, current_scoring
from ecosight_daemon.detection.stream import read_header
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.models.registry import ModelRegistry
from ecosight_daemon.review.queue import ReviewQueue, ScoredRun

logger = logging.getLogger(__name__)
MAX_SCAN_FILES = 10_000  # files looked at per scan; a larger tree is logged, and the rest waits
MAX_SCAN_DEPTH = 8
VERSION_CHECK_S = 1.0
RECENT_SHOWN = 50  # detections in the status document (the Detections page, GET /detections)


class Recordings:
    def __init__(self, settings: Settings, store: EmbeddingStore, embedder: Embedder, registry: ModelRegistry,
                 alerts: Alerts, clock: Callable[[], float], review: ReviewQueue | None = None) -> None:
        self.root = settings.detection.recordings_dir
        self._settle_s = settings.watch.settle_s
        self._incomplete_settle_s = settings.detection.incomplete_settle_s
        self._scan_every = settings.detection.scan_interval_s
        self._zone = parse_zone(settings.detection.timezone)
        self._background = settings.detection.background_class
        self._window_patches = settings.detection.window_patches
        self._dtype = settings.embedding.storage_dtype
        self._ledger = store.recordings
        self._embedder = embedder
        self._registry = registry
        self._alerts = alerts
        self._review = review
        self._clock = clock
        self._settling: dict[str, tuple[int, int, float]] = {}
        self._next_scan = 0.0
        self._next_version_check = 0.0
        self._scoring: Scoring | None = None
        self._job: Iterator[Any] | None = None
        self._look_for_work = True
        self.current: dict[str, Any] | None = None  # what the job is doing, for status
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # read-only here (the systemd unit): whoever copies recordings in makes it
            logger.warning("detection.recordings_dir %s does not exist and cannot be made (%s); it is looked "
                           "for every %.0f s", self.root, exc.strerror or exc, self._scan_every)

    @property
    def more_work(self) -> bool:
        return self._job is not None

    def step(self, now: float) -> None:
        if now >= self._next_scan:
            self._next_scan = now + self._scan_every
            self._scan(now)
        if now >= self._next_version_check:
            self._next_version_check = now + VERSION_CHECK_S
            self._refresh_scoring()
        if self._job is None and self._look_for_work:
            self._job = self._next_job()
            self._look_for_work = self._job is not None
        if self._job is not None:
            try:
                next(self._job)
            except StopIteration:
                self._job, self.current = None, None

    def status(self) -> dict[str, Any]:
        return {"folder": str(self.root), "by_state": self._ledger.counts_by_state(),
                "hours_analysed": round(self._ledger.seconds_analysed() / 3600, 4), "settling": len(self._settling),
                "current": self.current,
                "recent": [alert_payload(d) for d in self._ledger.detections(RECENT_SHOWN)]}

    # --- finding recordings ----------------------------------------------------------

    def _scan(self, now: float) -> None:
        known = self._ledger.all()
        seen: set[str] = set()
        for relpath, size, mtime_ns in self._files():
            seen.add(relpath)
            row = known.get(relpath)
            if row is not None and (row.size, row.mtime_ns) == (size, mtime_ns):
                self._settling.pop(relpath, None)
                continue
            previous = self._settling.get(relpath)
            if previous is None or previous[:2] != (size, mtime_ns):
                self._settling[relpath] = (size, mtime_ns, now)
            elif now - previous[2] >= self._settle_s and time.time() - mtime_ns / 1e9 >= self._settle_s:
                if self._maybe_still_copied(relpath, now - previous[2]):
                    continue
                del self._settling[relpath]
                if row is not None and self.current and self.current.get("recording") == relpath:
                    self._job = None  # it changed under the run: that run is void
                logger.info("recording %s: %s (%.1f MB)", relpath, "changed, analysed again" if row else "new",
                            size / 1e6)
                self._ledger.note(relpath, size, mtime_ns)
                self._look_for_work = True
        if self.root.is_dir():
            for relpath in set(known) - seen:
                logger.info("recording %s: gone; its events are forgotten", relpath)
                self._ledger.forget(relpath)
        for relpath in set(self._settling) - seen:
            del self._settling[relpath]

    def _maybe_still_copied(self, relpath: str, unchanged_s: float) -> bool:
        """A WAV with less audio than its header says, unchanged for less than incomplete_settle_s."""
        if unchanged_s >= self._incomplete_settle_s:
            return False
        try:
            return read_header(self.root / relpath).declared_s is not None
        except (AudioDecodeError, OSError):
            return False  # analysing it will give the reason

    def _files(self) -> Iterator[tuple[str, int, int]]:
        count = 0
        for folder, subfolders, names in os.walk(self.root):
            depth = Path(folder).relative_to(self.root).parts
            subfolders[:] = [] if len(depth) >= MAX_SCAN_DEPTH else sorted(
                d for d in subfolders if not is_ignored_name(d))
            for name in sorted(names):
                if not is_audio_name(name, RECORDING_EXTENSIONS):
                    continue
                count += 1
                if count > MAX_SCAN_FILES:
                    logger.warning("%s holds more than %d recordings; the rest are looked at once some are moved "
                                   "out", self.root, MAX_SCAN_FILES)
                    return
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                yield path.relative_to(self.root).as_posix(), info.st_size, info.st_mtime_ns

    # --- analysing and scoring -------------------------------------------------------

    def _refresh_scoring(self) -> None:
        version = self._registry.current_version()
        if version is not None and (self._scoring is None or self._scoring.version != version):
            self._scoring = current_scoring(self._registry, self._embedder, self._background, self._window_patches)
            self._look_for_work = True
            if self._scoring is not None:
                stale = self._ledger.scored_by_other_than(self._scoring.version)
                if stale:
                    logger.info("model %s: re-scoring %d recordings from their cached embeddings",
                                self._scoring.version, len(stale))

    def _next_job(self) -> Iterator[Any] | None:
        rows = sorted(self._ledger.all().values(), key=lambda r: (r.state != "detecting", r.path))
        for row in rows:
            if row.state in ("pending", "detecting"):
                return self._analyse(row.path)
        if self._scoring is not None:
            for path in self._ledger.scored_by_other_than(self._scoring.version):
                return self._score(path, self._scoring)
        return None

    def _analyse(self, relpath: str) -> Iterator[None]:
        self.current = {"recording": relpath, "doing": "analysing", "seconds": 0.0}
        started = time.monotonic()
        try:
            for seconds in run_recording(self.root, relpath, self._ledger, self._embedder, self._dtype, self._zone):
                self.current["seconds"] = round(seconds, 1)
                yield
        except RecordingChanged as exc:
            logger.warning("recording %s: %s; it is analysed again once it has settled", relpath, exc)
            self._ledger.unsettled(relpath, f"{exc}; analysed again once it has settled")
            return
        except AudioDecodeError as exc:
            logger.warning("recording %s: cannot be analysed: %s", relpath, exc)
            self._ledger.failed(relpath, str(exc))
            return
        except OSError as exc:
            logger.warning("recording %s: cannot be read: %s", relpath, exc)
            self._ledger.failed(relpath, f"cannot be read ({exc.strerror or exc})")
            return
        row = self._ledger.get(relpath)
        logger.info("recording %s: %.1f s analysed in %.1f s", relpath, row.seconds if row else 0.0,
                    time.monotonic() - started)
        if self._scoring is not None:
            yield from self._score(relpath, self._scoring)

    def _score(self, relpath: str, scoring: Scoring) -> Iterator[None]:
        row = self._ledger.get(relpath)
        if row is None or row.sha256 is None or row.state != "done":
            return
        self.current = {"recording": relpath, "doing": f"scoring with {scoring.version}"}
        first_time = row.model_version is None
        found: list[Event] = []
        trace = WindowTrace(scoring.classes, scoring.background, scoring.scorer().window_s)
        yield from score_cached(self._ledger.chunks(row.sha256, self._embedder.model_id), scoring, found, trace)
        ids = self._ledger.replace_detections(relpath, scoring.version, [
            (e.label, e.start_s, e.end_s, e.peak_s, e.score) for e in found])
        logger.info("recording %s: %d events (model %s%s)", relpath, len(found), scoring.version,
                    "" if first_time else ", re-scored from cached embeddings")
        if self._review is not None:
            self._review.fill(ScoredRun((self.root / relpath).resolve(), relpath, row.sha256, row.start_utc, found,
                                        trace, scoring.version))
        if first_time:
            for detection_id in ids:
                stored = self._ledger.detection(detection_id)
                if stored is not None:
                    self._alerts.detected(stored)
