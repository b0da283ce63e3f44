"""The ingest path with the real YAMNet, real files and a real SQLite cache."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.embedding.frontend import patch_count
from ecosight_daemon.embedding.tensorflow_runtime import YamnetEmbedder
from ecosight_daemon.ingest.file_steps import ConcurrentFiles, EmbedReport
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.ingest.one_shot import embed_pending
from ecosight_daemon.ingest.reconcile import reconcile
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.reports import CacheReports
from testkit.audio_files import WavWriter

LIMITS = IngestLimits(extensions=(".wav", ".flac"), max_duration_s=30.0, max_file_bytes=10_000_000)


@dataclass
class Corpus:
    audio: Path
    store: Database
    embedder: Any

    def sync(self) -> EmbedReport:
        reconcile(self.store, self.audio, LIMITS)
        return embed_pending(self.store, self.embedder, self.audio, LIMITS)

    def state(self, relpath: str) -> FileState | None:
        record = self.store.clips.file_record(relpath)
        return record.state if record else None


@pytest.fixture
def corpus(workspace: Path, yamnet: YamnetEmbedder) -> Iterator[Corpus]:
    store = Database.open(workspace / "models" / "cache.sqlite3")
    store.clips.adopt_model(yamnet.model_id, yamnet.fingerprint)
    yield Corpus(workspace / "audio", store, yamnet)
    store.close()


def test_cached_embeddings_equal_a_direct_hub_call(
    corpus: Corpus, write_wav: WavWriter, yamnet_handle: str
) -> None:
    import tensorflow as tf
    import tensorflow_hub as hub

    path = write_wav(corpus.audio / "gun_shot" / "shot.wav", "clicks", seconds=3.3, rate=44_100, channels=2)
    assert corpus.sync().embedded == 1
    record = corpus.store.clips.file_record("gun_shot/shot.wav")
    assert record is not None and record.sha256 is not None
    cached = corpus.store.clips.embeddings_for(record.sha256)

    waveform = decode_audio(path.read_bytes(), 60).waveform
    _, direct, _ = hub.load(yamnet_handle)(tf.constant(waveform))
    assert cached is not None and cached.shape == direct.shape == (patch_count(len(waveform)), 1024)
    np.testing.assert_allclose(cached, direct.numpy(), rtol=2e-3, atol=2e-3)  # float16 storage
    cosine = np.sum(cached * direct.numpy(), axis=1) / (
        np.linalg.norm(cached, axis=1) * np.linalg.norm(direct.numpy(), axis=1)
    )
    assert cosine.min() > 0.99999


def test_short_clip_embeds(corpus: Corpus, write_wav: WavWriter) -> None:
    write_wav(corpus.audio / "clips" / "tiny.wav", "tone", seconds=0.1)
    report = corpus.sync()
    assert (report.embedded, report.failed) == (1, 0)
    assert corpus.store.clips.embeddings_for(corpus.store.clips.file_record("clips/tiny.wav").sha256).shape == (1, 1024)  # type: ignore[union-attr]


def test_silent_and_nearly_silent_clips_are_refused_with_a_reason(
    corpus: Corpus, dev_corpus: Path, tmp_path: Path
) -> None:
    """A real gun shot scaled down to -75 dBFS is refused; the same shot at -45 dBFS is learned from."""
    import soundfile

    shot, rate = soundfile.read(sorted((dev_corpus / "gun_shot").glob("*.wav"))[0], always_2d=True)
    peak = np.abs(shot).max()
    folder = corpus.audio / "gun_shot"
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "silence.wav", np.zeros((rate * 590 // 100, 8)), rate, subtype="PCM_16")
    soundfile.write(folder / "faint.wav", shot / peak * 10 ** (-75 / 20), rate, subtype="FLOAT")
    soundfile.write(folder / "quiet.wav", shot / peak * 10 ** (-45 / 20), rate, subtype="FLOAT")
    limits = IngestLimits((".wav",), 30.0, 10_000_000, min_peak_dbfs=-60.0)
    reconcile(corpus.store, corpus.audio, limits)
    report = embed_pending(corpus.store, corpus.embedder, corpus.audio, limits)
    assert (report.embedded, report.failed) == (1, 2)
    reasons = {r.path: r.reason for r in corpus.store.clips.files(FileState.FAILED)}
    assert reasons["gun_shot/silence.wav"].startswith("digital silence")
    assert reasons["gun_shot/faint.wav"].startswith("nearly silent: peak -75.0 dBFS")
    assert "min_peak_dbfs (-60 dBFS)" in reasons["gun_shot/faint.wav"]
    assert corpus.state("gun_shot/quiet.wav") is FileState.EMBEDDED


def test_audioset_head_reproduces_yamnet_scores(corpus: Corpus, dev_corpus: Path, yamnet_handle: str) -> None:
    """The AudioSet layer read from the model turns cached embeddings into YAMNet's own scores."""
    import tensorflow as tf
    import tensorflow_hub as hub

    head = corpus.embedder.audioset_head()
    assert head.kernel.shape == (1024, 521) and head.bias.shape == (521,)
    waveform = decode_audio(sorted((dev_corpus / "gun_shot").glob("*.wav"))[0].read_bytes(), 60).waveform
    scores, embeddings, _ = hub.load(yamnet_handle)(tf.constant(waveform))
    recomputed = 1 / (1 + np.exp(-head.logits(embeddings.numpy())))
    np.testing.assert_allclose(recomputed, scores.numpy(), atol=1e-5)
    corpus.store.clips.save_audioset_head(corpus.embedder.model_id, head)
    stored = corpus.store.clips.audioset_head()
    assert stored is not None and np.array_equal(stored.kernel, head.kernel) and np.array_equal(stored.bias, head.bias)


def test_rename_and_move_are_not_embedded_again(corpus: Corpus, write_wav: WavWriter) -> None:
    write_wav(corpus.audio / "dog_bark" / "a.wav", "noise", seed=1)
    assert corpus.sync().embedded == 1
    os.rename(corpus.audio / "dog_bark" / "a.wav", corpus.audio / "dog_bark" / "b.wav")
    (corpus.audio / "dog_bark" / "sub").mkdir()
    shutil.copy2(corpus.audio / "dog_bark" / "b.wav", corpus.audio / "dog_bark" / "sub" / "c.WAV")
    report = corpus.sync()
    assert report.embedded == 0 and report.skipped == 2
    assert corpus.state("dog_bark/a.wav") is None
    assert corpus.state("dog_bark/b.wav") is FileState.EMBEDDED
    assert corpus.state("dog_bark/sub/c.WAV") is FileState.EMBEDDED
    assert corpus.store.clips.embedding_count() == 1


def test_modified_file_is_embedded_again(corpus: Corpus, write_wav: WavWriter) -> None:
    path = write_wav(corpus.audio / "engine_idling" / "e.wav", "tone", seed=1)
    corpus.sync()
    before = corpus.store.clips.file_record("engine_idling/e.wav")
    write_wav(path, "noise", seconds=2.0, seed=2)
    assert corpus.sync().embedded == 1
    after = corpus.store.clips.file_record("engine_idling/e.wav")
    assert before is not None and after is not None and before.sha256 != after.sha256
    assert corpus.store.clips.embeddings_for(after.sha256).shape[0] == patch_count(32_000)  # type: ignore[union-attr]


def test_deleted_file_leaves_the_corpus(corpus: Corpus, write_wav: WavWriter) -> None:
    write_wav(corpus.audio / "clips" / "a.wav", seed=1)
    write_wav(corpus.audio / "clips" / "b.wav", seed=2)
    corpus.sync()
    (corpus.audio / "clips" / "a.wav").unlink()
    assert reconcile(corpus.store, corpus.audio, LIMITS).removed == 1
    assert [r.path for r in corpus.store.clips.files()] == ["clips/b.wav"]


def test_identical_bytes_in_two_classes_are_a_conflict(corpus: Corpus, write_wav: WavWriter) -> None:
    path = write_wav(corpus.audio / "gun_shot" / "x.wav", "clicks", seed=3)
    shutil.copy(path, corpus.audio / "dog_bark" / "x-copy.wav")
    write_wav(corpus.audio / "dog_bark" / "real.wav", "noise", seed=4)
    report = corpus.sync()
    assert report.embedded == 2 and report.skipped == 1  # the copy's bytes were embedded once
    counts = CacheReports(corpus.store).class_counts()
    assert counts["gun_shot"].conflicts == 1 and counts["dog_bark"].conflicts == 1
    conflicting = corpus.store.clips.conflicting_hashes()
    assert corpus.store.clips.file_record("gun_shot/x.wav").sha256 in conflicting  # type: ignore[union-attr]


class ScaledYamnet:
    """A second embedding model. Only one YAMNet build exists on these machines, so this
    wraps the real one with different numbers and a different fingerprint."""

    def __init__(self, real: YamnetEmbedder) -> None:
        self._real = real
        self.model_id = "yamnet-test-second-model"
        self.fingerprint = {**real.fingerprint, "savedmodel_sha256": "second"}
        self.sample_rate, self.dim = real.sample_rate, real.dim

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        return self._real.embed(waveform) * 2.0


def test_another_model_fingerprint_is_never_mixed(corpus: Corpus, write_wav: WavWriter) -> None:
    write_wav(corpus.audio / "clips" / "a.wav", seed=1)
    corpus.sync()
    sha = corpus.store.clips.file_record("clips/a.wav").sha256  # type: ignore[union-attr]
    first = corpus.store.clips.embeddings_for(sha)

    second = ScaledYamnet(corpus.embedder)
    assert corpus.store.clips.adopt_model(second.model_id, second.fingerprint) == 1
    assert corpus.store.clips.embeddings_for(sha) is None
    assert corpus.state("clips/a.wav") is FileState.PENDING
    corpus.embedder = second
    assert corpus.sync().embedded == 1
    np.testing.assert_allclose(corpus.store.clips.embeddings_for(sha), first * 2, rtol=2e-3, atol=2e-3)

    corpus.store.clips.adopt_model(corpus_model := "yamnet-unused", {"handle": corpus_model})
    assert corpus.store.clips.embeddings_for(sha) is None


def test_bad_files_fail_with_reasons_while_the_rest_embed(corpus: Corpus, write_wav: WavWriter) -> None:
    folder = corpus.audio / "gun_shot"
    write_wav(folder / "good1.wav", seed=1)
    write_wav(folder / "good2.WAV", "noise", rate=48_000, subtype="PCM_24", seed=2)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "text.wav").write_text("this is a text file\n")
    write_wav(folder / "long.wav", "tone", seconds=31.0, rate=8_000)
    (folder / "notes.txt").write_text("not an audio name: ignored")
    (folder / "partial.wav.part").write_bytes(b"ignored")
    write_wav(corpus.audio / "loose.wav")  # no class folder

    report = corpus.sync()
    assert (report.embedded, report.failed) == (2, 4)
    reasons = {r.path: r.reason for r in corpus.store.clips.files(FileState.FAILED)}
    assert reasons == {
        "gun_shot/empty.wav": "empty file (0 bytes)",
        "gun_shot/random.wav": reasons["gun_shot/random.wav"],
        "gun_shot/text.wav": reasons["gun_shot/text.wav"],
        "gun_shot/long.wav": "longer than max_duration_s (30 s): 31.0 s",
        "loose.wav": "not in a class folder; move it into <audio_dir>/<class>/",
    }
    assert reasons["gun_shot/random.wav"].startswith("not a readable WAV/FLAC/OGG file")
    assert reasons["gun_shot/text.wav"].startswith("not a readable WAV/FLAC/OGG file")
    assert corpus.store.clips.file_record("gun_shot/partial.wav.part") is None
    assert corpus.store.clips.file_record("gun_shot/notes.txt") is None


def test_failed_file_is_retried_only_when_it_changes(corpus: Corpus, write_wav: WavWriter) -> None:
    bad = corpus.audio / "clips" / "later.wav"
    bad.write_bytes(b"")
    assert corpus.sync().failed == 1
    assert corpus.sync().failed == 0  # unchanged: not retried
    write_wav(bad, seed=5)
    report = corpus.sync()
    assert (report.embedded, report.failed) == (1, 0)
    assert corpus.state("clips/later.wav") is FileState.EMBEDDED


def test_fifo_and_symlink_are_refused_without_blocking(
    corpus: Corpus, write_wav: WavWriter, tmp_path: Path
) -> None:
    outside = write_wav(tmp_path / "outside.wav", seed=7)
    os.symlink(outside, corpus.audio / "clips" / "link.wav")
    os.mkfifo(corpus.audio / "clips" / "pipe.wav")
    (corpus.audio / "clips" / "dir.wav").mkdir()
    report = corpus.sync()
    assert report.embedded == 0
    reasons = {r.path: r.reason for r in corpus.store.clips.files(FileState.FAILED)}
    assert reasons == {
        "clips/link.wav": "symbolic link (not followed)",
        "clips/pipe.wav": "not a regular file",
    }


def test_a_missing_audio_folder_does_not_empty_the_index(corpus: Corpus, write_wav: WavWriter) -> None:
    write_wav(corpus.audio / "clips" / "a.wav", seed=1)
    corpus.sync()
    corpus.audio.rename(corpus.audio.with_name("unmounted"))
    assert reconcile(corpus.store, corpus.audio, LIMITS).removed == 0
    assert corpus.state("clips/a.wav") is FileState.EMBEDDED


def test_a_spent_time_budget_starts_no_new_file_and_finishes_those_started(corpus: Corpus,
                                                                           write_wav: WavWriter) -> None:
    workers = corpus.embedder.for_concurrent_files()[1] if isinstance(corpus.embedder, ConcurrentFiles) else 1
    started_at_once = workers + 1  # one queued ahead of the workers
    files = started_at_once + 3
    for i in range(files):
        write_wav(corpus.audio / "clips" / f"c{i}.wav", "noise", seconds=1.0, seed=i)
    reconcile(corpus.store, corpus.audio, LIMITS)
    first = embed_pending(corpus.store, corpus.embedder, corpus.audio, LIMITS, time_budget_s=0.0)
    assert (first.embedded, corpus.store.clips.count_files(FileState.PENDING)) == (started_at_once, 3)
    rest = embed_pending(corpus.store, corpus.embedder, corpus.audio, LIMITS, time_budget_s=60.0)
    assert (rest.embedded, corpus.store.clips.count_files(FileState.PENDING)) == (3, 0)


def test_a_machine_short_of_descriptors_or_memory_is_not_a_bad_file() -> None:
    import errno

    from ecosight_daemon.ingest.limits import shortage

    assert shortage(OSError(errno.EMFILE, "Too many open files")) == "Too many open files"
    assert shortage(OSError(errno.ENFILE, "Too many open files in system")) is not None
    assert shortage(MemoryError()) == "out of memory"
    assert shortage(OSError(errno.EACCES, "Permission denied")) is None  # the file's own problem
    assert shortage(OSError(errno.EIO, "Input/output error")) is None


def test_a_file_replaced_by_other_bytes_of_the_same_size_and_mtime_is_embedded_again(
    corpus: Corpus, write_wav: WavWriter, tmp_path: Path
) -> None:
    """`cp -p` / `rsync -t`: same size, same mtime, other sound. It used to train for ever on
    the old embedding, through rescans and restarts."""
    path = write_wav(corpus.audio / "dog_bark" / "bark.wav", "tone", seed=1)
    assert corpus.sync().embedded == 1
    before = corpus.store.clips.file_record("dog_bark/bark.wav")
    other = write_wav(tmp_path / "other.wav", "noise", seed=2)
    assert other.stat().st_size == path.stat().st_size
    old = path.stat()
    time.sleep(0.01)  # let the clock move past the first write's ctime (coarse-clock filesystems)
    shutil.copyfile(other, path)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # what cp -p does
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert path.stat().st_ctime_ns != old.st_ctime_ns
    report = corpus.sync()
    after = corpus.store.clips.file_record("dog_bark/bark.wav")
    assert report.embedded == 1
    assert before is not None and after is not None and after.sha256 != before.sha256
    assert corpus.sync().embedded == 0  # and then it is unchanged again
