"""The front end over a stream of chunks, run once per chunk: its log-mel frames give the
patches YAMNet reads, the onset features and the shot CNN's band-normalised inputs, each
patch compared with the audio before it as it would be in the whole recording.

The frames of the last ONSET_CONTEXT_S before the next chunk (a whole number of hops) are
kept and put in front of that chunk's frames; a patch near a chunk's end sees less of its
future than in a whole-file run. A run resumed part-way is `prime`d with the audio just
before its first patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ecosight_daemon.artifacts.event_detector import ONSET_CONTEXT_S, ONSET_FEATURES, onset_features_from_frames
from ecosight_daemon.artifacts.shot_spectrogram import INPUT_SHAPE, spectrogram_inputs_from_frames
from ecosight_daemon.embedding.frontend import (
    HOP,
    MEL_BANDS,
    PATCH_HOP_FRAMES,
    PATCH_HOP_SAMPLES,
    PATCH_HOP_SECONDS,
    log_mel,
    pad_to_whole_patches,
    patch_count,
    patches_from_frames,
)
from ecosight_daemon.embedding.interface import Embedder

CONTEXT_HOPS = math.ceil(ONSET_CONTEXT_S / PATCH_HOP_SECONDS)


@dataclass(frozen=True)
class EmbeddedChunk:
    frames: np.ndarray  # the chunk's log-mel frames, the carried frames before it first
    first: int  # the chunk's first patch among the frames' patches
    embeddings: np.ndarray  # (patches, dim): YAMNet's, one per patch of the chunk


def features_of(chunk: EmbeddedChunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """feed's second half, on any thread: the embeddings with their onset features and CNN inputs."""
    count = len(chunk.embeddings)
    if count == 0:
        return chunk.embeddings, np.zeros((0, ONSET_FEATURES), np.float32), np.zeros((0, *INPUT_SHAPE), np.float32)
    onsets = onset_features_from_frames(chunk.frames)[chunk.first:chunk.first + count]
    spectrograms = spectrogram_inputs_from_frames(chunk.frames)[chunk.first:chunk.first + count]
    return chunk.embeddings, onsets, spectrograms


class ChunkFrontEnd:
    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._context = np.zeros((0, MEL_BANDS), np.float32)  # the frames of whole hops before the next chunk
        self._primed = np.zeros(0, np.float32)  # the audio before a resumed run's first chunk

    def prime(self, before: np.ndarray) -> None:
        """The audio just before the next chunk's first patch (what a resumed run lost)."""
        keep = min(len(before) // PATCH_HOP_SAMPLES, CONTEXT_HOPS) * PATCH_HOP_SAMPLES
        self._primed = np.asarray(before[len(before) - keep:], np.float32)

    def feed(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(patches, dim) embeddings, (patches, 4) onset features and (patches, 48, 32) CNN
        inputs of one chunk's audio."""
        return features_of(self.embed(waveform))

    def embed(self, waveform: np.ndarray) -> EmbeddedChunk:
        """feed's first half, chunk after chunk in order: the chunk's frames (those carried
        before it included) and YAMNet's embeddings of its patches."""
        if len(waveform) == 0:
            return EmbeddedChunk(np.zeros((0, MEL_BANDS), np.float32), 0,
                                 np.zeros((0, self._embedder.dim), np.float32))
        if len(self._primed):  # the frames at the seam need the audio on both sides
            # Pad the chunk, not the whole: a tail shorter than a patch still makes whole patches.
            frames = log_mel(np.concatenate([self._primed, pad_to_whole_patches(waveform)]))
            context_frames = len(self._primed) // HOP
            self._primed = np.zeros(0, np.float32)
        else:
            frames = np.concatenate([self._context, log_mel(pad_to_whole_patches(waveform))])
            context_frames = len(self._context)
        count = patch_count(len(waveform))
        embeddings = self._embed(waveform, frames[context_frames:])
        next_start = context_frames + count * PATCH_HOP_FRAMES
        self._context = frames[max(0, next_start - CONTEXT_HOPS * PATCH_HOP_FRAMES):next_start]
        return EmbeddedChunk(frames, context_frames // PATCH_HOP_FRAMES, embeddings)

    def _embed(self, waveform: np.ndarray, frames: np.ndarray) -> np.ndarray:
        embed_features = getattr(self._embedder, "embed_features", None)
        if embed_features is None:  # TensorFlow's YAMNet reads the waveform, not patches
            return self._embedder.embed(waveform)
        return np.asarray(embed_features(patches_from_frames(frames)), np.float32)
