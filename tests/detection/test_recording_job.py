"""One recording through the daemon's step-by-step run, on real files with the real ONNX
YAMNet and a real cache: a run stopped part-way and resumed caches exactly what an
uninterrupted run caches; a file that changes under the run stops it with the reason."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ecosight_daemon.detection.recording_job import JobSettings, RecordingChanged
from ecosight_daemon.detection.recording_job import run_recording as run_with
from ecosight_daemon.detection.recording_reader import RecordingReader
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.recordings import RecordingLedger

pytestmark = pytest.mark.slow
SECONDS = 200


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory, yamnet_handle: str, onnx_body: Path | None) -> OnnxEmbedder:
    assert onnx_body is not None
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(onnx_body, models / "onnx" / onnx_body.name)
    return OnnxEmbedder.load(yamnet_handle, models)


@pytest.fixture(scope="module")
def reader() -> Iterator[RecordingReader]:
    reading = RecordingReader(budget_s=60.0)
    yield reading
    reading.close()


def run_recording(root: Path, relpath: str, ledger: RecordingLedger, embedder: OnnxEmbedder, reader: RecordingReader,
                  dtype: str, turn_chunks: int = 0) -> Iterator[float]:
    """The run's progress, the reader's waits left out."""
    for seconds in run_with(root, relpath, ledger, embedder, reader, JobSettings(dtype, turn_chunks=turn_chunks)):
        if seconds is not None:
            yield seconds


def field_like(path: Path, seconds: int = SECONDS) -> Path:
    """Noise with a clap every 7 s (so the onset features have something to see)."""
    rng = np.random.default_rng(3)
    audio = 0.01 * rng.standard_normal(seconds * 16_000).astype(np.float32)
    for start in range(16_000, len(audio) - 800, 7 * 16_000):
        audio[start:start + 800] += 0.5 * np.exp(-np.arange(800) / 120.0) * rng.standard_normal(800)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, 16_000, subtype="PCM_16")
    return path


def cached(store: Database, embedder: OnnxEmbedder, name: str) -> tuple[np.ndarray, np.ndarray]:
    row = store.recordings.get(name)
    assert row is not None and row.sha256 is not None
    chunks = list(store.recordings.chunks(row.sha256, embedder.model_id))
    return np.concatenate([c.embeddings for c in chunks]), np.concatenate([c.onsets for c in chunks])


def test_a_resumed_run_caches_what_an_uninterrupted_one_does(tmp_path: Path, embedder: OnnxEmbedder,
                                                             reader: RecordingReader) -> None:
    root = tmp_path / "recordings"
    field_like(root / "a.wav")
    whole = Database.open(tmp_path / "whole.sqlite3")
    whole.recordings.note("a.wav", 0, 0)
    list(run_recording(root, "a.wav", whole.recordings, embedder, reader, "float32"))
    assert whole.recordings.get("a.wav").state == "done"  # type: ignore[union-attr]

    parted = Database.open(tmp_path / "parted.sqlite3")
    parted.recordings.note("a.wav", 0, 0)
    steps = run_recording(root, "a.wav", parted.recordings, embedder, reader, "float32")
    progress = [next(steps) for _ in range(2)]  # two chunks
    steps.close()  # as a kill would: nothing after the last committed chunk
    assert progress[-1] == pytest.approx(256 * 0.48)
    row = parted.recordings.get("a.wav")
    assert row is not None and row.state == "detecting" and row.sha256 is not None
    assert parted.recordings.cached_patches(row.sha256, embedder.model_id) == 256
    turn = list(run_recording(root, "a.wav", parted.recordings, embedder, reader, "float32", turn_chunks=1))
    assert turn == [pytest.approx(384 * 0.48)]  # one chunk a turn: the recording waits for its next
    assert parted.recordings.get("a.wav").state == "detecting"  # type: ignore[union-attr]
    list(run_recording(root, "a.wav", parted.recordings, embedder, reader, "float32"))

    expected, resumed = cached(whole, embedder, "a.wav"), cached(parted, embedder, "a.wav")
    assert len(resumed[0]) == len(expected[0]) == 1 + (SECONDS * 16_000 - 15_600) // 7_680 + 1
    np.testing.assert_allclose(resumed[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(resumed[1], expected[1], atol=1e-4)  # onsets primed with the audio before
    assert parted.recordings.get("a.wav").state == "done"  # type: ignore[union-attr]
    whole.close()
    parted.close()


def test_a_file_changed_under_the_run_stops_it(tmp_path: Path, embedder: OnnxEmbedder,
                                               reader: RecordingReader) -> None:
    root = tmp_path / "recordings"
    path = field_like(root / "b.wav")
    store = Database.open(tmp_path / "cache.sqlite3")
    store.recordings.note("b.wav", 0, 0)
    steps = run_recording(root, "b.wav", store.recordings, embedder, reader, "float16")
    next(steps)
    next(steps)
    field_like(path, seconds=SECONDS + 60)  # replaced with another recording
    with pytest.raises(RecordingChanged, match="changed while it was read"):
        list(steps)
    store.close()


def test_one_front_end_per_chunk_gives_what_embedding_and_onsets_apart_gave(tmp_path: Path, embedder: OnnxEmbedder,
                                                                            reader: RecordingReader) -> None:
    """The chunk's log-mel feeds YAMNet, the onset features and the shot CNN: the same
    embeddings as the embedder's own front end, the same onsets and CNN inputs as computed
    on the carried audio."""
    from ecosight_daemon.artifacts.event_detector import onset_features
    from ecosight_daemon.artifacts.shot_spectrogram import spectrogram_inputs
    from ecosight_daemon.detection.chunk_front_end import CONTEXT_HOPS, ChunkFrontEnd
    from ecosight_daemon.detection.recording_reader import finish
    from ecosight_daemon.detection.stream import StreamEnd, read_header, stream_chunks

    path = field_like(tmp_path / "c.wav", seconds=150)
    header, _ = finish(read_header(reader, path))
    front_end, context = ChunkFrontEnd(embedder), np.zeros(0, np.float32)
    chunks = 0
    for chunk in stream_chunks(reader, path, header, StreamEnd()):
        if chunk is None:
            continue
        patches, onsets, spectrograms = front_end.feed(chunk.waveform)
        assert len(patches) == len(onsets) == len(spectrograms) > 0
        np.testing.assert_allclose(patches, embedder.embed(chunk.waveform), atol=1e-5)
        before = len(context) // 7_680
        carried = np.concatenate([context, chunk.waveform])
        np.testing.assert_allclose(onsets, onset_features(carried)[before:before + len(patches)], atol=1e-4)
        expected = spectrogram_inputs(carried)[before:before + len(patches)].astype(np.int16)
        assert np.abs(spectrograms.astype(np.int16) - expected).max() <= 1  # one code step: rounding at the edge
        assert np.mean(spectrograms == expected) > 0.999 and np.std(expected) > 1
        next_start = len(context) + len(patches) * 7_680
        context = np.concatenate([context, chunk.waveform])[max(0, next_start - CONTEXT_HOPS * 7_680):next_start]
        chunks += 1
    assert chunks == 3 and before == CONTEXT_HOPS  # the carried context was full by the last chunk


def test_the_front_end_one_chunk_ahead_gives_each_chunk_what_feeding_them_in_turn_gave(
        tmp_path: Path, embedder: OnnxEmbedder, reader: RecordingReader) -> None:
    """`detect` scores a chunk while a worker runs the next one through YAMNet: the outputs are
    exactly those of one front end fed the chunks in turn, and the next chunk's embedding has
    finished while the caller still holds this one (here it waits for it: without the worker
    it would wait out the timeout)."""
    import threading

    from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd, EmbeddedChunk
    from ecosight_daemon.detection.front_end_ahead import front_end_ahead
    from ecosight_daemon.detection.recording_reader import finish
    from ecosight_daemon.detection.stream import StreamEnd, read_header, stream_chunks

    class Watched(ChunkFrontEnd):
        def __init__(self) -> None:
            super().__init__(embedder)
            self.fed: list[tuple[int, str]] = []
            self.done = threading.Event()

        def embed(self, waveform: np.ndarray) -> EmbeddedChunk:
            out = super().embed(waveform)
            self.fed.append((len(self.fed), threading.current_thread().name))
            self.done.set()
            return out

    path = field_like(tmp_path / "c.wav", seconds=150)
    header, _ = finish(read_header(reader, path))
    in_turn = ChunkFrontEnd(embedder)
    expected = [(c.first_patch, in_turn.feed(c.waveform)) for c in stream_chunks(reader, path, header, StreamEnd())
                if c is not None]
    watched, got = Watched(), []
    for chunk, outputs in front_end_ahead(stream_chunks(reader, path, header, StreamEnd()), watched):
        if not chunk.last:
            watched.done.clear()
            assert len(watched.fed) == len(got) + 2 or watched.done.wait(30), "the next chunk's embedding never ran"
        got.append((chunk.first_patch, outputs))
    assert len(got) == len(expected) == 3
    for (first, outputs), (first_expected, outputs_expected) in zip(got, expected, strict=True):
        assert first == first_expected
        for array, array_expected in zip(outputs, outputs_expected, strict=True):
            assert np.array_equal(array, array_expected)
    assert all(name.startswith("ecosight-front-end") for _, name in watched.fed)


def test_an_error_in_the_front_end_ahead_reaches_the_caller_and_leaves_no_thread(
        tmp_path: Path, embedder: OnnxEmbedder, reader: RecordingReader) -> None:
    from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd, EmbeddedChunk
    from ecosight_daemon.detection.front_end_ahead import front_end_ahead
    from ecosight_daemon.detection.recording_reader import finish
    from ecosight_daemon.detection.stream import StreamEnd, read_header, stream_chunks

    class FailsOnTheSecond(ChunkFrontEnd):
        calls = 0

        def embed(self, waveform: np.ndarray) -> EmbeddedChunk:
            self.calls += 1
            if self.calls == 2:
                raise MemoryError("the second chunk")
            return super().embed(waveform)

    path = field_like(tmp_path / "c.wav", seconds=150)
    header, _ = finish(read_header(reader, path))
    handed_on = []
    with pytest.raises(MemoryError, match="the second chunk"):
        for chunk, _outputs in front_end_ahead(stream_chunks(reader, path, header, StreamEnd()),
                                               FailsOnTheSecond(embedder)):
            handed_on.append(chunk.first_patch)
    assert handed_on == [0]  # the first chunk was scored; the error came with the second


def test_content_whose_every_patch_is_cached_is_done_without_reading_it_again(
        tmp_path: Path, embedder: OnnxEmbedder, reader: RecordingReader) -> None:
    """A file moved inside the folder is seen gone (its row forgotten, its chunks kept) before it
    is seen under its new name; on 2026-12-03's main that run resumed after the last patch and
    failed on the tail ("window shape cannot be larger than input array shape")."""
    root = tmp_path / "recordings"
    field_like(root / "a.wav", seconds=150)
    store = Database.open(tmp_path / "cache.sqlite3")
    store.recordings.note("a.wav", 0, 0)
    list(run_recording(root, "a.wav", store.recordings, embedder, reader, "float32"))
    before = cached(store, embedder, "a.wav")
    (root / "archive").mkdir()
    (root / "a.wav").rename(root / "archive" / "a.wav")
    store.recordings.forget("a.wav")
    store.recordings.note("archive/a.wav", 0, 0)
    assert list(run_recording(root, "archive/a.wav", store.recordings, embedder, reader, "float32")) == []
    row = store.recordings.get("archive/a.wav")
    assert row is not None and row.state == "done" and row.seconds == pytest.approx(150.0)
    after = cached(store, embedder, "archive/a.wav")
    assert len(after[0]) == len(before[0]) and np.array_equal(after[0], before[0])
    store.close()


def test_a_resumed_tail_shorter_than_a_patch_makes_whole_patches(embedder: OnnxEmbedder) -> None:
    from ecosight_daemon.detection.chunk_front_end import ChunkFrontEnd

    rng = np.random.default_rng(5)
    front_end = ChunkFrontEnd(embedder)
    front_end.prime(0.01 * rng.standard_normal(20 * 7_680).astype(np.float32))
    patches, onsets, spectrograms = front_end.feed(0.01 * rng.standard_normal(3_840).astype(np.float32))
    assert patches.shape == (1, embedder.dim) and onsets.shape[0] == 1 and spectrograms.shape == (1, 48, 32)
