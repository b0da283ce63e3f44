"""YAMNet on ONNX Runtime: the conversion from the real SavedModel, its verification and
rebuilding, the fallback to TensorFlow, embeddings equal to TensorFlow's on the real dev
corpus within the cache's float16 quantum, and a daemon that runs without TensorFlow."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecosight_daemon.audio import decode_audio, is_audio_name
from ecosight_daemon.embedding.loader import load_embedder
from ecosight_daemon.embedding.onnx_conversion import BODY_FILE, MIN_COSINE, RECORD_FILE, ensure_body, intact
from ecosight_daemon.embedding.onnx_runtime import OnnxEmbedder
from testkit.daemon_process import DaemonProcess, idle_daemon, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def onnx(tmp_path: Path, yamnet_handle: str, onnx_body: Path | None) -> OnnxEmbedder:
    assert onnx_body is not None
    shutil.copytree(onnx_body, tmp_path / "models" / "onnx" / onnx_body.name)
    return OnnxEmbedder.load(yamnet_handle, tmp_path / "models")


def test_the_conversion_records_what_it_verified(onnx_body: Path | None, yamnet: Any) -> None:
    assert onnx_body is not None and onnx_body.name == yamnet.model_id
    record = json.loads((onnx_body / RECORD_FILE).read_text())
    assert record["worst_cosine"] >= MIN_COSINE and record["model_id"] == yamnet.model_id
    assert intact(onnx_body, yamnet.model_id)
    assert not intact(onnx_body, "yamnet-0000000000000000")  # another model's body is not this one's


def test_same_model_id_and_the_same_embeddings_as_tensorflow_on_the_dev_corpus(
    onnx: OnnxEmbedder, yamnet: Any, dev_corpus: Path
) -> None:
    assert onnx.model_id == yamnet.model_id and onnx.fingerprint == yamnet.fingerprint
    clips = sorted(p for p in dev_corpus.glob("*/*") if is_audio_name(p.name, (".wav", ".flac", ".ogg")))
    assert len(clips) >= 250
    worst, patches = 1.0, 0
    for path in clips:
        waveform = decode_audio(path.read_bytes(), 600).waveform
        ours, theirs = onnx.embed(waveform), yamnet.embed(waveform)
        assert ours.shape == theirs.shape, path
        cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        worst, patches = min(worst, float(cosine.min())), patches + len(cosine)
    assert worst >= MIN_COSINE, f"worst per-patch cosine {worst:.7f} over {patches} patches"
    np.testing.assert_array_equal(onnx.audioset_head().kernel, yamnet.audioset_head().kernel)


def test_long_clips_are_embedded_in_batches_like_one_call(onnx: OnnxEmbedder) -> None:
    rng = np.random.default_rng(3)
    waveform = (0.2 * rng.standard_normal(16_000 * 70)).astype(np.float32)  # 145 patches: two batches
    from ecosight_daemon.embedding.frontend import log_mel_patches

    whole = onnx._session.run(None, {onnx._input: log_mel_patches(waveform)})[0]
    np.testing.assert_allclose(onnx.embed(waveform), whole.reshape(-1, 1024), atol=1e-5)


def test_the_pipeline_runs_one_file_per_core_and_stores_each_files_own_embeddings(
    onnx: OnnxEmbedder, tmp_path: Path, dev_corpus: Path
) -> None:
    from ecosight_daemon.ingest.file_steps import ConcurrentFiles
    from ecosight_daemon.ingest.limits import IngestLimits
    from ecosight_daemon.ingest.one_shot import embed_pending
    from ecosight_daemon.ingest.reconcile import reconcile
    from ecosight_daemon.store.clip_index import FileState
    from ecosight_daemon.store.database import Database

    shared, workers = onnx.for_concurrent_files()
    assert isinstance(onnx, ConcurrentFiles) and workers >= 1 and shared._session is not onnx._session
    # Clips of different lengths, so files finish out of order on the workers.
    clips = sorted((p for p in dev_corpus.glob("*/*") if p.suffix.lower() == ".wav"), key=lambda p: p.stat().st_size)
    chosen = clips[::len(clips) // 16][:16]
    for path in chosen:
        (tmp_path / "audio" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "audio" / path.parent.name / path.name)
    store = Database.open(tmp_path / "cache.sqlite3")
    try:
        store.clips.adopt_model(onnx.model_id, onnx.fingerprint)
        limits = IngestLimits((".wav",), max_duration_s=600, max_file_bytes=100_000_000)
        reconcile(store, tmp_path / "audio", limits)
        report = embed_pending(store, onnx, tmp_path / "audio", limits)
        assert (report.embedded, report.failed, store.clips.count_files(FileState.PENDING)) == (len(chosen), 0, 0)
        for path in chosen:
            record = store.clips.file_record(f"{path.parent.name}/{path.name}")
            assert record is not None and record.sha256 is not None
            stored = store.clips.embeddings_for(record.sha256)
            expected = onnx.embed(decode_audio(path.read_bytes(), 600).waveform)
            assert stored is not None and stored.shape == expected.shape, path.name
            np.testing.assert_allclose(stored, expected, atol=4e-3, rtol=1e-3)  # float16 storage
    finally:
        store.close()


def test_a_damaged_body_is_rebuilt_not_trusted(onnx: OnnxEmbedder, tmp_path: Path, yamnet_handle: str) -> None:
    folder = tmp_path / "models" / "onnx" / onnx.model_id
    body = folder / BODY_FILE
    data = bytearray(body.read_bytes())
    data[len(data) // 2] ^= 0xFF
    body.write_bytes(bytes(data))
    assert not intact(folder, onnx.model_id)
    again = OnnxEmbedder.load(yamnet_handle, tmp_path / "models")
    assert intact(folder, onnx.model_id)
    hum = np.full(8000, 0.1, np.float32)
    np.testing.assert_allclose(again.embed(hum), onnx.embed(hum), atol=1e-5)


@pytest.mark.parametrize("record", ['[]', '"verified"', 'null', '7', '{"model_id": 5, "worst_cosine": "high"}',
                                    '{"model_id": "x"', "\udcff not text"])
def test_a_verification_record_of_any_shape_is_damaged_not_a_crash(
    onnx: OnnxEmbedder, tmp_path: Path, record: str
) -> None:
    folder = tmp_path / "models" / "onnx" / onnx.model_id
    (folder / RECORD_FILE).write_bytes(record.encode("utf-8", "surrogateescape"))
    assert not intact(folder, onnx.model_id)


def test_a_killed_conversion_leaves_nothing_behind_for_long(onnx: OnnxEmbedder, tmp_path: Path,
                                                             yamnet_handle: str) -> None:
    onnx_dir = tmp_path / "models" / "onnx"
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = onnx_dir / f"{onnx.model_id}.partial-{dead.pid}"  # its process is gone
    running = onnx_dir / f"{onnx.model_id}.partial-{os.getppid()}"  # a conversion still under way
    for leftover in (abandoned, running):
        leftover.mkdir()
        (leftover / BODY_FILE).write_bytes(b"half a model")
    assert ensure_body(yamnet_handle, tmp_path / "models", onnx.model_id) == onnx_dir / onnx.model_id
    assert not abandoned.exists() and running.exists()


def test_a_savedmodel_that_is_not_yamnet_falls_back_to_tensorflow_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = (
        "import sys, tensorflow as tf\n"
        "class Doubler(tf.Module):\n"
        "    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])\n"
        "    def __call__(self, waveform):\n"
        "        return {'scores': waveform[:, None] * 2.0}\n"
        "m = Doubler()\n"
        "tf.saved_model.save(m, sys.argv[1], signatures={'serving_default': m.__call__})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "not_yamnet")], check=True, capture_output=True,
                   timeout=300)
    with caplog.at_level(logging.WARNING, logger="ecosight_daemon.embedding.onnx_runtime"):
        embedder = load_embedder(str(tmp_path / "not_yamnet"), tmp_path / "models", "onnxruntime")
    assert type(embedder).__name__ == "YamnetEmbedder"
    assert "ONNX Runtime cannot run YAMNet here" in caplog.text and "no convolution reads" in caplog.text
    assert not (tmp_path / "models" / "onnx").exists() or not any((tmp_path / "models" / "onnx").iterdir())


def test_the_daemon_runs_without_tensorflow_and_a_tensorflow_cache_stays_valid(
    tmp_path: Path, yamnet_handle: str, write_wav: Any
) -> None:
    for i in range(3):
        write_wav(tmp_path / "audio" / "clips" / f"c{i}.wav", "tone", seed=i)
    with idle_daemon(tmp_path, yamnet_handle, embedding='runtime = "tensorflow"') as daemon:
        assert daemon.status()["embedding_runtime"] == "tensorflow" and daemon.status()["tensorflow_loaded"]
        rows = daemon.embedding_rows()
    with idle_daemon(tmp_path, yamnet_handle) as daemon:  # the default runtime, on the same cache
        status = daemon.status()
        assert status["embedding_runtime"] == "onnxruntime" and status["tensorflow_loaded"] is False
        assert status["classes"]["clips"]["embedded"] == 3 and daemon.embedding_rows() == rows
        write_wav(daemon.audio / "clips" / "new.wav", "noise", seed=9)
        daemon.wait_embedded("clips/new.wav")
        assert daemon.status()["tensorflow_loaded"] is False
        assert "embedded clips/c0.wav" not in daemon.log_text().split("runs on ONNX Runtime")[-1]


def test_a_conversion_at_start_asks_systemd_for_more_start_time(tmp_path: Path, yamnet_handle: str) -> None:
    """The conversion runs before READY; the unit gives a start 300 s while a conversion may
    take up to 900 s on a slow machine: it asks for more time while it works."""
    (tmp_path / "audio" / "clips").mkdir(parents=True)
    write_config(tmp_path, yamnet_handle)
    shutil.rmtree(tmp_path / "models" / "onnx", ignore_errors=True)  # no body yet: the daemon converts it
    daemon = DaemonProcess(tmp_path).start()
    try:
        extend = [i for i, line in enumerate(daemon.notifications) if line.startswith("EXTEND_TIMEOUT_USEC=")]
        assert extend and extend[0] < daemon.notifications.index("READY=1"), daemon.notifications[:10]
        assert int(daemon.notifications[extend[0]].split("=")[1]) >= 10_000_000
        assert "converting YAMNet's CNN body" in daemon.log_text()
    finally:
        daemon.kill()
