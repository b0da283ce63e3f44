from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ecosight_daemon.errors import CacheError
from ecosight_daemon.store.clip_index import FileState
from ecosight_daemon.store.database import Database
from ecosight_daemon.store.reports import CacheReports
from ecosight_daemon.store.schema import SCHEMA_VERSION

MODEL_A = ("yamnet-aaaa", {"handle": "/a", "savedmodel_sha256": "a"})
MODEL_B = ("yamnet-bbbb", {"handle": "/b", "savedmodel_sha256": "b"})


def patches(seed: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1024)).astype(np.float32)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same test body against an on-disk database and ':memory:'."""
    location = tmp_path / "cache.sqlite3" if request.param == "file" else ":memory:"
    opened = Database.open(location)
    opened.clips.adopt_model(*MODEL_A)
    yield opened
    opened.close()


def test_record_and_read_back_embeddings(store: Database) -> None:
    original = patches(1)
    store.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", original, 1.2)
    record = store.clips.file_record("gun_shot/a.wav")
    assert record is not None and record.state is FileState.EMBEDDED and record.sha256 == "h1"
    restored = store.clips.embeddings_for("h1")
    assert restored is not None and restored.dtype == np.float32 and restored.shape == (3, 1024)
    # float16 storage: relative error of half precision, far below what matters for pooling.
    np.testing.assert_allclose(restored, original, rtol=1e-3, atol=1e-3)


def test_float32_storage_is_exact(tmp_path: Path) -> None:
    store = Database.open(tmp_path / "c.sqlite3", storage_dtype="float32")
    store.clips.adopt_model(*MODEL_A)
    original = patches(2)
    store.clips.record_embedding("x/a.wav", "x", 1, 1, "h", original, 1.0)
    np.testing.assert_array_equal(store.clips.embeddings_for("h"), original)


def test_same_bytes_noted_under_another_path_are_already_embedded(store: Database) -> None:
    store.clips.record_embedding("dog_bark/a.wav", "dog_bark", 10, 20, "h1", patches(1), 1.0)
    assert store.clips.note_file("dog_bark/renamed.wav", "dog_bark", 10, 30, "h1") is FileState.EMBEDDED
    assert store.clips.note_file("dog_bark/new.wav", "dog_bark", 10, 30, "h2") is FileState.PENDING
    assert store.clips.note_file("dog_bark/unhashed.wav", "dog_bark", 10, 30, None) is FileState.PENDING


def test_same_bytes_in_two_classes_is_a_conflict(store: Database) -> None:
    store.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(1), 1.0)
    store.clips.note_file("gun_shot/copy.wav", "gun_shot", 10, 20, "h1")
    assert store.clips.conflicting_hashes() == set()  # a duplicate within one class is no conflict
    store.clips.note_file("dog_bark/a.wav", "dog_bark", 10, 20, "h1")
    assert store.clips.conflicting_hashes() == {"h1"}
    counts = CacheReports(store).class_counts()
    assert counts["gun_shot"].conflicts == 2 and counts["dog_bark"].conflicts == 1


def test_models_are_never_mixed(store: Database) -> None:
    store.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(1), 1.0)
    assert store.clips.adopt_model(*MODEL_B) == 1  # the file must be embedded again for model B
    assert store.clips.embeddings_for("h1") is None
    assert store.clips.file_record("gun_shot/a.wav").state is FileState.PENDING  # type: ignore[union-attr]
    store.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(9), 1.0)
    assert store.clips.adopt_model(*MODEL_A) == 0
    np.testing.assert_allclose(store.clips.embeddings_for("h1"), patches(1), atol=1e-3)  # A's, not B's
    assert store.clips.embedding_count("yamnet-aaaa") == 1 and store.clips.embedding_count("yamnet-bbbb") == 1


def test_failure_and_forget(store: Database) -> None:
    store.clips.record_failure("clips/bad.wav", "clips", 5, 6, None, "empty file (0 bytes)")
    record = store.clips.file_record("clips/bad.wav")
    assert record is not None and record.state is FileState.FAILED and record.reason == "empty file (0 bytes)"
    assert store.clips.forget_files(["clips/bad.wav", "clips/never.wav"]) == 1
    assert store.clips.file_record("clips/bad.wav") is None


def test_a_failed_transaction_leaves_nothing_behind(store: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        # dim 0 violates a CHECK after the file row would have been written in the same transaction
        with store._transaction() as db:  # the store's own transaction, tested directly
            db.execute(
                "INSERT INTO files (path, label, sha256, size, mtime_ns, state, first_seen, updated_at)"
                " VALUES ('a/x.wav', 'a', 'h', 1, 1, 'embedded', 0, 0)"
            )
            db.execute(
                "INSERT INTO embeddings VALUES ('h', 'yamnet-aaaa', 1, 0, 'float16', x'00', 1, 0)"
            )
    assert store.clips.file_record("a/x.wav") is None
    assert CacheReports(store).integrity_ok()


def test_reopen_keeps_rows_model_and_enforces_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    first = Database.open(path)
    first.clips.adopt_model(*MODEL_A)
    first.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(1), 1.0)
    first.close()
    again = Database.open(path)
    assert again.clips.model_id == "yamnet-aaaa"
    assert again.clips.embeddings_for("h1") is not None
    with pytest.raises(sqlite3.IntegrityError):
        with again._transaction() as db:
            db.execute("INSERT INTO embeddings VALUES ('h9', 'no-such-model', 1, 1, 'float16', x'0000', 1, 0)")
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    Database.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(CacheError, match="newer than this program"):
        Database.open(path)


def test_a_file_that_is_not_sqlite_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="Recover with: mv") as raised:
        Database.open(path)
    command = str(raised.value).split("Recover with: ", 1)[1].split(" ; ", 1)[0]
    subprocess.run(["bash", "-c", command], check=True)  # the exact command the message gives works
    Database.open(path).close()
    assert (tmp_path / "cache.sqlite3.corrupt").read_bytes().startswith(b"this is not a database")


def test_class_counts_agree_with_a_row_by_row_tally(store: Database) -> None:
    rng = np.random.default_rng(7)
    for i in range(300):
        label = ["gun_shot", "dog_bark", "clips", ""][int(rng.integers(4))]
        sha256 = f"h{int(rng.integers(120))}"  # repeats: duplicates within a class and conflicts across
        path = f"{label or '.'}/{i}.wav"
        match int(rng.integers(4)):
            case 0:
                store.clips.record_embedding(path, label, 10, i, sha256, patches(i, 1), 1.0)
            case 1:
                store.clips.note_file(path, label, 10, i, None)
            case 2:
                store.clips.note_file(path, label, 10, i, sha256)
            case _:
                store.clips.record_failure(path, label, 10, i, sha256 if i % 2 else None, "bad")
    conflicts = store.clips.conflicting_hashes()
    assert conflicts, "the mix should hold label conflicts, or the conflict column goes untested"
    expected: dict[str, dict[str, int]] = {}
    for record in store.clips.files():
        tally = expected.setdefault(record.label, {"files": 0, "embedded": 0, "pending": 0, "failed": 0,
                                                   "conflicts": 0})
        tally["files"] += 1
        tally[record.state.value] += 1
        tally["conflicts"] += record.sha256 in conflicts
    assert {label: c.as_dict() for label, c in CacheReports(store).class_counts().items()} == expected


def test_a_cache_with_the_first_indexes_opens_with_the_covering_ones(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    first = Database.open(path)
    first.clips.adopt_model(*MODEL_A)
    first.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(1), 1.0)
    first.close()
    with sqlite3.connect(path) as db:  # the index layout version-1 caches were created with
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.execute("DROP INDEX files_by_sha256_label")
        db.execute("DROP INDEX files_by_state_sha256_label")
        db.execute("CREATE INDEX files_by_sha256 ON files(sha256)")
        db.execute("CREATE INDEX files_by_state ON files(state)")
    reopened = Database.open(path)
    reopened.clips.adopt_model(*MODEL_A)
    assert reopened.clips.training_hashes() == {"h1"}
    reopened.close()
    with sqlite3.connect(path) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                  "AND tbl_name = 'files' AND sql IS NOT NULL")}
        plan = db.execute("EXPLAIN QUERY PLAN SELECT DISTINCT sha256 FROM files WHERE state = 'embedded' "
                          "AND label != '' AND sha256 IS NOT NULL").fetchall()
    assert indexes == {"files_by_sha256_label", "files_by_state_sha256_label"}
    assert "COVERING INDEX files_by_state_sha256_label" in str(plan)


def test_class_counts_follow_writes_from_this_and_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    daemon_side, other = Database.open(path), Database.open(path)  # e.g. the daemon and `embed`
    reports = CacheReports(daemon_side)
    daemon_side.clips.adopt_model(*MODEL_A)
    other.clips.adopt_model(*MODEL_A)
    daemon_side.clips.note_file("gun_shot/a.wav", "gun_shot", 10, 20, None)
    assert reports.class_counts()["gun_shot"].pending == 1
    daemon_side.clips.record_embedding("gun_shot/a.wav", "gun_shot", 10, 20, "h1", patches(1), 1.0)
    assert reports.class_counts()["gun_shot"].as_dict() == {
        "files": 1, "embedded": 1, "pending": 0, "failed": 0, "conflicts": 0}
    other.clips.note_file("dog_bark/a.wav", "dog_bark", 10, 20, "h1")
    counts = reports.class_counts()
    assert counts["dog_bark"].conflicts == 1 and counts["gun_shot"].conflicts == 1
    daemon_side.close()
    other.close()


def test_a_version_1_cache_is_upgraded_in_place_by_every_later_migration(tmp_path: Path) -> None:
    from ecosight_daemon.pooling import AudiosetHead
    from ecosight_daemon.store.schema import MIGRATIONS

    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as db:  # a cache as version 1 of the program wrote it
        db.executescript(MIGRATIONS[0][1])
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO files VALUES ('gun_shot/a.wav', 'gun_shot', NULL, 1, 2, 'pending', NULL, 0, 0)")
    store = Database.open(path)
    assert store.clips.file_record("gun_shot/a.wav") is not None  # rows kept
    store.clips.adopt_model(*MODEL_A)
    head = AudiosetHead(np.arange(6, dtype=np.float32).reshape(3, 2), np.ones(2, np.float32))
    store.clips.save_audioset_head(MODEL_A[0], head)
    assert np.array_equal(store.clips.audioset_head().kernel, head.kernel)  # type: ignore[union-attr]
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                "AND name LIKE 'files_by_%'")}
    assert indexes == {"files_by_sha256_label", "files_by_state_sha256_label"}


def test_a_cache_without_cnn_inputs_reads_its_recordings_once_more_and_keeps_their_detections(tmp_path: Path) -> None:
    from ecosight_daemon.store.schema import MIGRATIONS

    path = tmp_path / "cache.sqlite3"
    with sqlite3.connect(path) as db:  # a cache as version 9 of the program left it: one recording analysed
        for _, script in MIGRATIONS[:9]:
            db.executescript(script)
        db.execute("INSERT INTO meta VALUES ('schema_version', '9')")
        db.execute("INSERT INTO recordings (path, sha256, size, mtime_ns, state, seconds, model_version, first_seen, "
                   "updated_at) VALUES ('a.wav', 'h1', 10, 20, 'done', 60.0, 'v0001', 0, 0)")
        db.execute("INSERT INTO recording_chunks (sha256, model_id, first_patch, patches, dtype, embeddings, onsets) "
                   "VALUES ('h1', 'm', 0, 1, 'float32', ?, ?)", (bytes(4 * 1024), bytes(16)))
        db.execute("INSERT INTO detections (path, label, start_s, end_s, peak_s, score, model_version, found_at) "
                   "VALUES ('a.wav', 'gun_shot', 1.0, 2.0, 1.5, 0.9, 'v0001', 0)")
    store = Database.open(path)
    assert store.recordings.waiting() == ["a.wav"] and store.recordings.chunk_rows() == 0
    assert [d.label for d in store.recordings.detections()] == ["gun_shot"]  # replaced once it is scored again
    codes = np.arange(48 * 32, dtype=np.int64).reshape(1, 48, 32) % 200 - 100
    store.recordings.add_chunk("h1", "m", 0, patches(1, 1), np.ones((1, 4), np.float32), codes.astype(np.int8),
                               "float32", 0.96, "a.wav", last=True)
    (chunk,) = store.recordings.chunks("h1", "m")
    assert chunk.spectrograms.dtype == np.int8 and np.array_equal(chunk.spectrograms, codes.reshape(1, -1))
    store.close()


def test_every_migration_has_the_next_number() -> None:
    from ecosight_daemon.store.schema import MIGRATIONS

    assert [number for number, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_decode_attempts_count_per_file_version_and_end_with_a_result(store: Database) -> None:
    store.clips.note_file("a.wav", "dog_bark", 10, 1, None)
    assert store.attempts.count([("a.wav", 10, 1), ("b.wav", 5, 1)]) == {"a.wav": 1, "b.wav": 1}
    assert store.attempts.count([("a.wav", 10, 1)]) == {"a.wav": 2}
    store.attempts.take_back(["a.wav"])  # a start that did not count (shut down, out of descriptors)
    assert store.attempts.count([("a.wav", 10, 1)]) == {"a.wav": 2}
    assert store.attempts.count([("a.wav", 10, 2)]) == {"a.wav": 1}  # another version of the file
    store.clips.record_failure("a.wav", "dog_bark", 10, 2, None, "bad")  # a result: the count starts again
    store.clips.forget_files(["b.wav"])
    assert store.attempts.count([("a.wav", 10, 2)]) == {"a.wav": 1}
    assert store.query("SELECT path FROM decode_attempts") == [("a.wav",)]


def test_an_alert_is_sent_once_per_event_and_a_moved_edge_is_the_same_event(store: Database) -> None:
    """first_alert: once per content, class and start, whatever the path; alerted_near: an event
    whose edges a re-score moved (an alert started within it or up to 3 s before) was alerted."""
    from ecosight_daemon.store.recordings import StoredDetection

    def event(label: str, start: float, end: float, path: str = "AM01_a.WAV") -> StoredDetection:
        return StoredDetection(0, path, label, start, end, start + 0.5, 0.9, "v0001", None)

    assert store.recordings.first_alert("x", event("gun_shot", 98.4, 99.36))
    assert not store.recordings.first_alert("x", event("gun_shot", 98.4, 99.9, path="copy.WAV"))
    assert store.recordings.first_alert("x", event("gun_shot", 100.8, 102.72))  # another start: another event
    assert store.recordings.alerted_near("x", event("gun_shot", 97.92, 99.36), 3.0)  # started earlier, same bang
    assert store.recordings.alerted_near("x", event("gun_shot", 101.0, 101.9), 3.0)  # started later, same bang
    assert not store.recordings.alerted_near("x", event("gun_shot", 106.0, 107.0), 3.0)
    assert not store.recordings.alerted_near("x", event("dog_bark", 98.4, 99.36), 3.0)
    assert not store.recordings.alerted_near("y", event("gun_shot", 98.4, 99.36), 3.0)
