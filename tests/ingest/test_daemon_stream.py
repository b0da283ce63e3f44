"""The daemon's embedding pipeline across loop turns (daemon_stream.py), on the real ONNX
runtime and real files: files still running when a turn's time is up are written by a
later turn, once; an inbox message ends a wait early; closing leaves what was not written
pending; a file whose decoder hangs holds back no other and fails after its budget; a
file whose decoder dies is tried again, a bounded number of times.

No real file hangs libsndfile here (see test_isolated_decode.py): the test-only pause
point `decoding` stands in for a decoder that never returns."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.ingest.daemon_stream import EmbedStream
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.attempts import MAX_ATTEMPTS
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from testkit.audio_files import WavWriter
from testkit.daemon_process import wait_for

pytestmark = pytest.mark.slow

LIMITS = IngestLimits((".wav",), max_duration_s=600, max_file_bytes=100_000_000)


@pytest.fixture
def onnx(tmp_path: Path, yamnet_handle: str, onnx_body: Path | None) -> OnnxEmbedder:
    assert onnx_body is not None
    shutil.copytree(onnx_body, tmp_path / "models" / "onnx" / onnx_body.name)
    return OnnxEmbedder.load(yamnet_handle, tmp_path / "models")


@pytest.fixture
def store(tmp_path: Path, onnx: OnnxEmbedder) -> Iterator[Database]:
    opened = Database.open(tmp_path / "cache.sqlite3")
    opened.clips.adopt_model(onnx.model_id, onnx.fingerprint)
    yield opened
    opened.close()


def clips(audio: Path, write_wav: WavWriter, count: int, seconds: float) -> list[Path]:
    return [write_wav(audio / "clips" / f"c{i:02d}.wav", "noise", seconds=seconds, seed=i) for i in range(count)]


def test_files_still_running_are_written_by_a_later_turn_once(
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    paths = clips(audio, write_wav, 12, seconds=20.0)
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    try:
        first = stream.run(store, limit=64, time_budget_s=0.0)
        assert stream.busy and first.embedded < len(paths)  # the turn ended with files running
        written, turns = first.embedded, 1
        while stream.busy or store.clips.count_files(FileState.PENDING):
            written += stream.run(store, limit=64, time_budget_s=0.05).embedded
            turns += 1
        assert written == len(paths) and turns > 2
    finally:
        stream.close()
    for path in paths:
        record = store.clips.file_record(f"clips/{path.name}")
        assert record is not None and record.state is FileState.EMBEDDED and record.sha256 is not None
        stored = store.clips.embeddings_for(record.sha256)
        expected = onnx.embed(decode_audio(path.read_bytes(), 600).waveform)
        assert stored is not None
        np.testing.assert_allclose(stored, expected, atol=4e-3, rtol=1e-3)  # float16 storage
    assert store.clips.embedding_count() == len(paths)


def test_a_message_for_the_loop_ends_the_wait_while_the_pipeline_has_room(
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter
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
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    paths = clips(audio, write_wav, 10, seconds=30.0)
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    written = stream.run(store, limit=64, time_budget_s=0.0).embedded
    stream.close()
    assert written < len(paths)
    assert store.clips.count_files(FileState.PENDING) == len(paths) - written
    assert store.clips.embedding_count() == written
    again = EmbedStream(onnx, audio, LIMITS)  # the next start embeds the rest
    try:
        while again.busy or store.clips.count_files(FileState.PENDING):
            again.run(store, limit=64, time_budget_s=1.0)
    finally:
        again.close()
    assert store.clips.embedding_count() == len(paths)


def run_until(stream: EmbedStream, store: Database, done: object, timeout: float, what: str) -> None:
    wait_for(lambda: stream.run(store, limit=64, time_budget_s=0.2) and done(), timeout, what)  # type: ignore[operator]


def state_of(store: Database, relpath: str) -> FileState | None:
    record = store.clips.file_record(relpath)
    return None if record is None else record.state


@pytest.fixture
def pause_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first decode started from now on hangs (its decoder writes its pid here)."""
    pause_file = tmp_path / "paused.pid"
    monkeypatch.setenv("ECOSIGHT_PAUSE_AT", "decoding")
    monkeypatch.setenv("ECOSIGHT_PAUSE_FILE", str(pause_file))
    monkeypatch.setenv("ECOSIGHT_PAUSE_ONCE", "1")
    return pause_file


def test_a_hanging_decode_holds_back_no_other_file_and_fails_after_its_budget(
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter, pause_once: Path
) -> None:
    audio = tmp_path / "audio"
    write_wav(audio / "clips" / "hangs.wav", "noise", seconds=2.0, seed=99)
    reconcile(store, audio, LIMITS)
    limits = IngestLimits((".wav",), max_duration_s=600, max_file_bytes=100_000_000, max_decode_s=10.0)
    stream = EmbedStream(onnx, audio, limits)
    try:
        run_until(stream, store, pause_once.exists, 30, "the first decode to hang")
        hung_at = time.monotonic()
        others = clips(audio, write_wav, 12, seconds=2.0)
        reconcile(store, audio, limits)
        run_until(stream, store, lambda: all(state_of(store, f"clips/{p.name}") is FileState.EMBEDDED
                                             for p in others), 60, "the other files embedded")
        assert time.monotonic() - hung_at < 10.0  # all of them within the hung decode's budget
        assert state_of(store, "clips/hangs.wav") is FileState.PENDING
        run_until(stream, store, lambda: state_of(store, "clips/hangs.wav") is FileState.FAILED, 30,
                  "the hanging file failed")
        record = store.clips.file_record("clips/hangs.wav")
        assert record is not None and "took longer than max_decode_s (10 s) and was stopped" in (record.reason or "")
    finally:
        stream.close(store)


def test_a_file_whose_decoder_is_killed_is_tried_again_and_then_embedded(
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter, pause_once: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    audio = tmp_path / "audio"
    write_wav(audio / "clips" / "victim.wav", "noise", seconds=2.0, seed=7)
    reconcile(store, audio, LIMITS)
    stream = EmbedStream(onnx, audio, LIMITS)
    try:
        run_until(stream, store, pause_once.exists, 30, "the decode to pause")
        os.kill(int(pause_once.read_text()), signal.SIGKILL)  # as an OOM kill would
        run_until(stream, store, lambda: state_of(store, "clips/victim.wav") is FileState.EMBEDDED, 30,
                  "the file embedded on its second try")
    finally:
        stream.close(store)
    assert "decoding clips/victim.wav was interrupted (the decoder process was killed by SIGKILL)" in caplog.text
    assert store.query("SELECT COUNT(*) FROM decode_attempts")[0][0] == 0  # its count ended with its result


def test_a_file_started_too_often_without_a_result_fails_without_another_try(
    tmp_path: Path, onnx: OnnxEmbedder, store: Database, write_wav: WavWriter
) -> None:
    audio = tmp_path / "audio"
    path = write_wav(audio / "clips" / "killer.wav", "noise", seconds=2.0, seed=5)
    reconcile(store, audio, LIMITS)
    record = store.clips.file_record("clips/killer.wav")
    assert record is not None
    for _ in range(MAX_ATTEMPTS):  # as if three daemons had died decoding it (tests/reliability does it for real)
        store.attempts.count([(record.path, record.size, record.mtime_ns)])
    stream = EmbedStream(onnx, audio, LIMITS)
    try:
        report = stream.run(store, limit=64, time_budget_s=1.0)
    finally:
        stream.close(store)
    assert report.failed == 1 and not stream.busy
    failed = store.clips.file_record("clips/killer.wav")
    assert failed is not None and failed.state is FileState.FAILED
    assert f"interrupted {MAX_ATTEMPTS} times" in (failed.reason or "")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new version of the file starts at 0
    reconcile(store, audio, LIMITS)
    again = EmbedStream(onnx, audio, LIMITS)
    try:
        run_until(again, store, lambda: state_of(store, "clips/killer.wav") is FileState.EMBEDDED, 30, "embedded")
    finally:
        again.close(store)
