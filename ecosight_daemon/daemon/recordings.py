"""The daemon's long recordings: recordings_dir looked at every scan_interval_s, a file
taken once its size and mtime held still for settle_s, then analysed a step at a time on
the loop (recording_job.py), scored from the cache, and re-scored from the cache whenever
the current version changes (a promotion, a rollback) or its site has learned enough more of
its own background (site_learning.py). One step is one chunk (~61 s of
audio), one poll of the recording reader, or one cached chunk re-scored, so signals and
status are answered between steps. Recordings take turns of `turn_minutes` of audio.

Whatever a recording does (an absurd clock, a file that hangs the reader, a bug), it ends
as that recording `failed` with the reason; the loop goes on. A recording whose turns keep
being cut short by the reader dying is failed after MAX_ATTEMPTS.

Alerts go out when a recording is scored for the first time. A new version's re-score
replaces its events quietly (they were alerted on already, or are a new model's second
opinion on everything heard before). A re-score by what its site learned since alerts the
events it adds (none of its class overlapped them before, none was alerted there), as they
would have been in a recording analysed after the site had learned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.alerts import Alerts
from ecosight_daemon.daemon.recordings_folder import RecordingsFolder
from ecosight_daemon.detection.cached_scoring import score_cached
from ecosight_daemon.detection.clock import parse_zone
from ecosight_daemon.detection.detection_view import detection_view, recorder_timeline
from ecosight_daemon.detection.events import Event
from ecosight_daemon.detection.patch_scorer import PatchScorer
from ecosight_daemon.detection.recording_job import JobSettings, RecordingChanged, run_recording
from ecosight_daemon.detection.recording_reader import ReaderInterrupted, RecordingReader, close_shared_cutter
from ecosight_daemon.detection.scoring import Scoring, current_scoring
from ecosight_daemon.detection.site_learning import SiteLearning
from ecosight_daemon.detection.stream import CHUNK_PATCHES, HeaderLimits
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.review.queue import ReviewQueue, ScoredRun
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.recordings import StoredDetection
from ecosight_daemon.util.printable import printable
from ecosight_daemon.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)
VERSION_CHECK_S = 1.0
RECENT_SHOWN = 50  # detections in the status document (the Detections page, GET /detections), and of each class
TIMELINE_RECORDINGS = 500  # the latest analysed recordings drawn on the Detections page's timeline
MAX_ATTEMPTS = 3  # turns on one recording cut short by the reader dying (or the daemon killed) before it fails
SAME_EVENT_S = 3.0  # an alert this long before an event's start (or within it) was for the same event


class Recordings:
    def __init__(self, settings: Settings, store: Database, embedder: Embedder, registry: ModelRegistry,
                 alerts: Alerts, clock: Callable[[], float], review: ReviewQueue | None = None) -> None:
        self.root = settings.detection.recordings_dir
        self._folder = RecordingsFolder(self.root, store.recordings, settings.watch.settle_s,
                                        settings.detection.incomplete_settle_s)
        self._scan_every = settings.detection.scan_interval_s
        self._zone = parse_zone(settings.detection.timezone)
        self._background = settings.detection.background_class
        self._window_patches = settings.detection.window_patches
        self._job_settings = JobSettings(settings.embedding.storage_dtype, self._zone,
                                         HeaderLimits(settings.detection.min_sample_rate, settings.detection.max_hours),
                                         max(1, round(settings.detection.turn_minutes * 60
                                                      / (CHUNK_PATCHES * PATCH_HOP_SECONDS))))
        self._reader = RecordingReader(settings.audio.max_decode_s)
        self._turns: dict[str, float] = {}  # when each recording last had a turn
        self._ledger = store.recordings
        self._embedder = embedder
        self._registry = registry
        self._alerts = alerts
        self._review = review
        self._sites = SiteLearning(store.sites, settings.detection.site_learning,
                                   settings.detection.site_learning_min_hours, settings.detection.false_alarms_per_hour)
        self._clock = clock
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
        """A job under way, or one may be waiting: the loop does not sleep between recordings."""
        return self._job is not None or self._look_for_work

    def step(self, now: float) -> None:
        if now >= self._next_scan:
            self._next_scan = now + self._scan_every
            noted = self._folder.scan(now)
            if noted:
                self._look_for_work = True
                if self.current and self.current.get("recording") in noted:
                    self._job = None  # it changed under the run: that run is void
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
                self._job, self.current, self._look_for_work = None, None, True
            except Exception as exc:  # one recording, whatever it holds, never stops the loop
                self._job_broke(exc)
                self._look_for_work = True

    def close(self) -> None:
        """At shutdown: the readers stopped (this one's and the pages' cutter); a turn under way
        ends without counting against its recording."""
        self._reader.kill()
        self._reader.close()
        close_shared_cutter()
        if self.current is not None and self.current.get("doing") == "analysing":
            self._ledger.turn_ended(self.current["recording"])

    def _job_broke(self, exc: Exception) -> None:
        relpath = (self.current or {}).get("recording")
        self._job, self.current = None, None
        logger.exception("recording %s: analysis failed; the other recordings go on", printable(relpath))
        if relpath is not None:
            self._ledger.failed(relpath, f"analysis failed ({type(exc).__name__}: {exc})")

    def status(self) -> dict[str, Any]:
        return {"folder": str(self.root), "by_state": self._ledger.counts_by_state(),
                "hours_analysed": round(self._ledger.seconds_analysed() / 3600, 4), "settling": self._folder.settling,
                "current": self.current, "clock_problems": self._ledger.clock_notes(RECENT_SHOWN),
                "recent": [detection_view(d) for d in self._ledger.detections(RECENT_SHOWN)],
                "recent_by_class": {label: [detection_view(d) for d in self._ledger.detections(RECENT_SHOWN, label)]
                                    for label in self._ledger.labels_found()},
                "timeline": recorder_timeline(self._ledger.analysed_spans(TIMELINE_RECORDINGS)),
                "site_learning": self._sites.status(self._scoring.version if self._scoring else None)}

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
        """The waiting recording whose last turn is oldest (new ones first); else a re-score."""
        waiting = self._ledger.waiting()
        if waiting:
            relpath = min(waiting, key=lambda path: (self._turns.get(path, 0.0), path))
            self._turns[relpath] = time.monotonic()
            return self._analyse(relpath)
        self._turns.clear()
        self._ledger.drop_orphan_chunks()  # nothing waits that could still reuse them (a moved file)
        if self._scoring is not None:
            for path in self._ledger.scored_by_other_than(self._scoring.version):
                return self._score(path, self._scoring)
            for path in self._sites.to_score_again(self._scoring.version):
                return self._score(path, self._scoring)
        return None

    def _analyse(self, relpath: str) -> Iterator[None]:
        self.current = {"recording": relpath, "doing": "analysing", "seconds": 0.0}
        started = time.monotonic()
        shown = printable(relpath)
        attempts = self._ledger.turn_begins(relpath)
        if attempts > MAX_ATTEMPTS:
            reason = (f"reading it was interrupted {attempts - 1} times (the reader or the daemon was killed while "
                      "reading it); replace the file to try again")
            logger.warning("recording %s: %s", shown, reason)
            self._ledger.failed(relpath, reason)
            return
        try:
            for seconds in run_recording(self.root, relpath, self._ledger, self._embedder, self._reader,
                                         self._job_settings):
                if seconds is not None:
                    self.current["seconds"] = round(seconds, 1)
                yield
        except RecordingChanged as exc:
            logger.warning("recording %s: %s; it is analysed again once it has settled", shown, exc)
            self._ledger.unsettled(relpath, f"{exc}; analysed again once it has settled")
            return
        except AudioDecodeError as exc:
            logger.warning("recording %s: cannot be analysed: %s", shown, exc)
            self._ledger.failed(relpath, str(exc))
            return
        except ReaderInterrupted as exc:
            logger.warning("recording %s: %s; tried again (attempt %d of %d)", shown, exc, attempts, MAX_ATTEMPTS)
            self._ledger.turn_ended(relpath, count_it=True)
            return
        except OSError as exc:
            logger.warning("recording %s: cannot be read: %s", shown, exc)
            self._ledger.failed(relpath, f"cannot be read ({exc.strerror or exc})")
            return
        self._ledger.turn_ended(relpath)
        row = self._ledger.get(relpath)
        if row is None or row.state != "done":
            return  # its turn is over; the others go first
        logger.info("recording %s: %.1f s analysed in %.1f s", shown, row.seconds, time.monotonic() - started)
        if self._scoring is not None:
            yield from self._score(relpath, self._scoring)

    def _score(self, relpath: str, scoring: Scoring) -> Iterator[None]:
        row = self._ledger.get(relpath)
        if row is None or row.sha256 is None or row.state != "done":
            return
        self.current = {"recording": relpath, "doing": f"scoring with {scoring.version}"}
        first_time = row.model_version is None
        new_version = row.model_version != scoring.version
        before = [] if new_version else self._ledger.spans_of(relpath)  # what a site's learning adds to
        found: list[Event] = []
        site = self._sites.thresholds(relpath, scoring)
        scorer = scoring.scorer(site.offsets)
        trace = WindowTrace(scoring.classes, scoring.background, scorer.window_s)
        yield from score_cached(self._ledger.chunks(row.sha256, self._embedder.model_id), scoring, scorer, found,
                                trace)
        self._sites.learned(relpath, row.sha256, scoring.version, row.seconds,
                            scorer.histogram if isinstance(scorer, PatchScorer) else None, site.learned_from_s)
        ids = self._ledger.replace_detections(relpath, scoring.version, [
            (e.label, e.start_s, e.end_s, e.peak_s, e.score) for e in found])
        logger.info("recording %s: %d events (model %s%s)", printable(relpath), len(found), scoring.version,
                    _rescore_note(first_time, new_version, site.learned_from_s))
        if self._review is not None:
            self._review.fill(ScoredRun((self.root / relpath).resolve(), relpath, row.sha256, row.start_utc, found,
                                        trace, scoring.version))
        if first_time or not new_version:
            stored = [d for d in map(self._ledger.detection, ids) if d is not None]
            if not first_time:  # only what the site's learning added, not alerted on before
                stored = [d for d in stored if not _overlaps(d, before)
                          and not self._ledger.alerted_near(row.sha256, d, SAME_EVENT_S)]
            for detection in stored:
                if self._ledger.first_alert(row.sha256, detection):
                    self._alerts.detected(detection)


def _overlaps(event: StoredDetection, spans: list[tuple[str, float, float]]) -> bool:
    return any(label == event.label and start < event.end_s and event.start_s < end for label, start, end in spans)


def _rescore_note(first_time: bool, new_version: bool, learned_from_s: float) -> str:
    if first_time:
        return ""
    if new_version:
        return ", re-scored from cached embeddings"
    if learned_from_s > 0:
        return f", re-scored from cached embeddings: its site's thresholds learned from {learned_from_s / 3600:.1f} h"
    return ", re-scored from cached embeddings: the version's own thresholds"
