"""One recording through the detector: header checked, clock found, streamed in chunks,
embedded (the next chunk while this one is scored), scored window by window, merged into
events. Memory stays that of two chunks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd
from ecosight_daemon.detection.clock import UTC, RecordingClock, iso_utc, recording_clock
from ecosight_daemon.detection.events import Event, join_across_chunks, merge_windows
from ecosight_daemon.detection.front_end_ahead import front_end_ahead
from ecosight_daemon.detection.patch_scorer import PatchScorer
from ecosight_daemon.detection.recording_reader import ReaderInterrupted, RecordingReader, finish
from ecosight_daemon.detection.stream import DEFAULT_LIMITS, HeaderLimits, StreamEnd, read_header, stream_chunks
from ecosight_daemon.detection.window_scorer import WindowScorer
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.embedding.frontend import PATCH_HOP_SECONDS
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError


@dataclass
class RecordingResult:
    path: Path
    clock: RecordingClock
    events: list[Event] = field(default_factory=list)
    seconds_analysed: float = 0.0
    truncated: str | None = None
    error: str | None = None

    def summary(self) -> dict[str, object]:
        return {
            "file": str(self.path),
            "start_utc": iso_utc(self.clock.start_utc),
            "clock_source": self.clock.source,
            **({"clock_note": self.clock.note} if self.clock.note else {}),
            "seconds_analysed": round(self.seconds_analysed, 3),
            "events": len(self.events),
            **({"truncated": self.truncated} if self.truncated else {}),
            **({"error": self.error} if self.error else {}),
        }


Scorer = WindowScorer | PatchScorer


def detect_recording(path: Path, embedder: Embedder, make_scorer: Callable[[], Scorer], classes: list[str],
                     background: str, reader: RecordingReader, zone: tzinfo = UTC,
                     start_time: datetime | None = None, progress: Callable[[float], None] = lambda seconds: None,
                     trace: WindowTrace | None = None, limits: HeaderLimits = DEFAULT_LIMITS) -> RecordingResult:
    """Events in one recording; a reason in `error` (nothing raised) when it cannot be read.

    `progress` is called with the seconds of audio analysed so far; `trace`, if given,
    keeps every window's summary (for review).
    """
    try:
        header, evidence = finish(read_header(reader, path, limits))
        clock = recording_clock(path, evidence, zone, start_time)
    except (AudioDecodeError, ReaderInterrupted) as exc:
        return RecordingResult(path, RecordingClock(None, "none"), error=str(exc))
    result = RecordingResult(path, clock)
    scorer = make_scorer()
    front_end = ChunkFrontEnd(embedder)
    end = StreamEnd()
    try:
        for chunk, (patches, onsets, spectrograms) in front_end_ahead(stream_chunks(reader, path, header, end),
                                                                      front_end):
            first, labels, scores = scorer.feed(patches, onsets, spectrograms, chunk.last)
            if trace is not None:
                trace.add(first, labels, scores)
            if len(labels):
                result.events.extend(merge_windows(labels, scores, classes, background, scorer.window_s, first))
            progress(min(header.duration_s, (chunk.first_patch + len(patches)) * PATCH_HOP_SECONDS))
    except OSError as exc:
        result.error = f"cannot read file ({exc.strerror or exc})"
    except (AudioDecodeError, ReaderInterrupted) as exc:
        result.error = str(exc)
    result.events = join_across_chunks(result.events)
    result.seconds_analysed = end.seconds_read
    result.truncated = end.truncated
    return result

