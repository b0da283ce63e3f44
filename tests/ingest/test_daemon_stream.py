"""The daemon's embedding pipeline across loop turns (embed_stream.py), on the real ONNX
runtime and real files: files still running when a turn's time is up are written by a
later turn, in order and once; an inbox message ends a wait early; closing leaves what
was not written pending."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.cache.store import EmbeddingStore, FileState
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.ingest.daemon_stream import EmbedStream
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.reconcile import reconcile
from testkit.audio_files import WavWriter

pytestmark = pytest.mark.slow

LIMITS = IngestLimits((".wav",), max_duration_s=600, max_file_bytes=100_000_000)


@pytest.fixture
def onnx(tmp_path: Path, yamnet_handle: str, onnx_body: Path | None) -> OnnxEmbedder:
    assert onnx_body is not None
    shutil.copytree(onnx_body, tmp_path / "models" / "onnx" / onnx_body.name)
    return OnnxEmbedder.load(yamnet_handle, tmp_path / "models")


@pytest.fixture
def store(tmp_path: Path, onnx: OnnxEmbedder) -> Iterator[EmbeddingStore]:
    opened = EmbeddingStore.open(tmp_path / "cache.sqlite3")
    opened.adopt_model(onnx.model_id, onnx.fingerprint)
    yield opened
    opened.close()


def clips(audio: Path, write_wav: WavWriter, count: int, seconds: float) -> list[Path]:
    return [write_wav(audio / "clips" / f"c{i:02d}.wav", "noise", seconds=seconds, seed=i) for i in range(count)]


def test_files_still_running_are_written_by_a_later_turn_in_order_and_once(
    tmp_path: Path, onnx: OnnxEmbedder, store: EmbeddingStore, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    paths = clips(audio, write_wav, 12, seconds=20.0)
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    try:
        first = stream.run(store, limit=64, time_budget_s=0.0)
        assert stream.busy and first.embedded < len(paths)  # the turn ended with files running
        written, turns = first.embedded, 1
        while stream.busy or store.count_files(FileState.PENDING):
            written += stream.run(store, limit=64, time_budget_s=0.05).embedded
            turns += 1
        assert written == len(paths) and turns > 2
    finally:
        stream.close()
    for path in paths:
        record = store.file_record(f"clips/{path.name}")
        assert record is not None and record.state is FileState.EMBEDDED and record.sha256 is not None
        stored = store.embeddings_for(record.sha256)
        expected = onnx.embed(decode_audio(path.read_bytes(), 600).waveform)
        assert stored is not None
        np.testing.assert_allclose(stored, expected, atol=4e-3, rtol=1e-3)  # float16 storage
    assert store.embedding_count() == len(paths)


def test_a_message_for_the_loop_ends_the_wait_while_the_pipeline_has_room(
    tmp_path: Path, onnx: OnnxEmbedder, store: EmbeddingStore, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    clips(audio, write_wav, 1, seconds=300.0)  # one long file: the pipeline has room for more
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    try:
        started = time.monotonic()
        report = stream.run(store, limit=64, time_budget_s=30.0, wake=lambda: True)
        assert time.monotonic() - started < 1.0 and report.embedded == 0 and stream.busy
        while stream.busy:
            report = stream.run(store, limit=64, time_budget_s=30.0)
        assert report.embedded == 1
    finally:
        stream.close()


def test_closing_leaves_what_was_not_written_pending_for_the_next_start(
    tmp_path: Path, onnx: OnnxEmbedder, store: EmbeddingStore, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    paths = clips(audio, write_wav, 10, seconds=30.0)
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    written = stream.run(store, limit=64, time_budget_s=0.0).embedded
    stream.close()
    assert written < len(paths)
    assert store.count_files(FileState.PENDING) == len(paths) - written
    assert store.embedding_count() == written
    again = EmbedStream(onnx, audio, LIMITS)  # the next start embeds the rest
    try:
        while again.busy or store.count_files(FileState.PENDING):
            again.run(store, limit=64, time_budget_s=1.0)
    finally:
        again.close()
    assert store.embedding_count() == len(paths)
