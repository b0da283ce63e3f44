"""A recording's events from its cached patch embeddings and onset features: the same
scorers as a streamed run, fed chunk by chunk from the cache (no decoding, no YAMNet)."""

from __future__ import annotations

from collections.abc import Iterator

from ecosight_daemon.detection.events import Event, join_across_chunks, merge_windows
from ecosight_daemon.detection.patch_scorer import PatchScorer
from ecosight_daemon.detection.scoring import Scoring
from ecosight_daemon.detection.window_scorer import WindowScorer
from ecosight_daemon.detection.window_trace import WindowTrace
from ecosight_daemon.store.recordings import CachedChunk


def score_cached(chunks: Iterator[CachedChunk], scoring: Scoring, scorer: WindowScorer | PatchScorer,
                 found: list[Event], trace: WindowTrace | None = None) -> Iterator[None]:
    """Appends the events `scorer` (one of `scoring`'s, fresh) finds to `found`, chunk by chunk
    (yields after each, so a 24 h re-score never holds the loop for long); the last step joins
    events cut by chunk boundaries. `trace`, if given, keeps every window's summary (for review)."""
    pieces: list[Event] = []
    chunk = next(chunks, None)
    while chunk is not None:
        following = next(chunks, None)
        first, labels, scores = scorer.feed(chunk.embeddings, chunk.onsets, chunk.spectrograms,
                                              following is None)
        if trace is not None:
            trace.add(first, labels, scores)
        if len(labels):
            pieces.extend(merge_windows(labels, scores, scoring.classes, scoring.background, scorer.window_s, first))
        chunk = following
        yield
    found.extend(join_across_chunks(pieces))
