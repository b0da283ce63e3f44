from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecosight_daemon.util.digest import sha256_of
from ecosight_daemon.util.durable import copy_atomically, replace_atomically, write_json
from ecosight_daemon.versions.registry import JOURNAL_FILE, METADATA_FILE, MODEL_FILE, DamagedVersion, ModelRegistry


def make_version(registry: ModelRegistry, version: str, payload: str) -> None:
    staging = registry.staging_dir(version)
    staging.mkdir(parents=True)
    (staging / "model.keras").write_text(f"model {payload}")
    (staging / "class_names.json").write_text(json.dumps([payload]))
    write_json(staging / "metadata.json", {"version": version, "status": "promoted",
                                           "model_sha256": sha256_of(staging / "model.keras")})
    registry.finalize(version)


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_atomically(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_promote_and_recover_an_interrupted_promotion(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    make_version(registry, "v0001", "one")
    make_version(registry, "v0002", "two")
    assert registry.next_version() == "v0003"
    registry.promote("v0001")
    assert registry.current_version() == "v0001"
    assert (tmp_path / MODEL_FILE).read_text() == "model one"

    # A crash after the journal and the model were written, before the metadata:
    write_json(tmp_path / JOURNAL_FILE, {"version": "v0002"})
    copy_atomically(registry.version_dir("v0002") / "model.keras", tmp_path / MODEL_FILE)
    assert registry.current_version() == "v0001"  # metadata still names the old version...
    assert registry.current_model_path() == registry.version_dir("v0001") / "model.keras"  # ...and its model
    assert ModelRegistry(tmp_path).recover() == "v0002"
    assert registry.current_version() == "v0002"
    assert (tmp_path / MODEL_FILE).read_text() == "model two"
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_stale_staging_is_removed_and_never_listed(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    make_version(registry, "v0001", "one")
    registry.staging_dir("v0002").mkdir()
    assert [v["version"] for v in registry.versions()] == ["v0001"]
    assert registry.next_version() == "v0003"
    registry.recover()
    assert not registry.staging_dir("v0002").exists()


def test_log_appends_and_keeps_an_unreadable_log_aside(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.append_log({"n": 1})
    registry.append_log({"n": 2})
    assert registry.retraining_log() == [{"n": 1}, {"n": 2}]
    (tmp_path / "retraining_log.json").write_text("[{\"n\": 1}, {\"n\"")
    registry.append_log({"n": 3})
    assert registry.retraining_log() == [{"n": 3}]
    kept = list(tmp_path.glob("retraining_log.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text().startswith("[{\"n\": 1}")


def test_a_damaged_current_version_gives_way_to_the_newest_intact_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut left v0002's model file empty: it is never published again."""
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    for version, payload in (("v0001", "one"), ("v0002", "two"), ("v0003", "three")):
        make_version(registry, version, payload)
    registry.promote("v0002")
    metadata = json.loads((registry.version_dir("v0003") / "metadata.json").read_text())
    write_json(registry.version_dir("v0003") / "metadata.json", {**metadata, "status": "rejected"})
    (registry.version_dir("v0002") / "model.keras").write_bytes(b"")
    assert registry.recover() == "v0001"  # v0003 was never promoted: not a fallback
    assert registry.current_version() == "v0001" and (tmp_path / MODEL_FILE).read_text() == "model one"
    assert "the current version v0002 is damaged" in caplog.text
    with pytest.raises(DamagedVersion):
        registry.promote("v0002")
    assert registry.recover() is None  # intact now: nothing to do


def test_a_damaged_published_copy_is_published_again(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    make_version(registry, "v0001", "one")
    registry.promote("v0001")
    (tmp_path / MODEL_FILE).write_bytes(b"\0" * 10)
    assert registry.recover() == "v0001"
    assert (tmp_path / MODEL_FILE).read_text() == "model one"


def test_a_journal_naming_a_damaged_version_is_not_finished(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    make_version(registry, "v0001", "one")
    make_version(registry, "v0002", "two")
    registry.promote("v0001")
    write_json(tmp_path / JOURNAL_FILE, {"version": "v0002"})
    (registry.version_dir("v0002") / "model.keras").write_text("model tw")  # cut short
    assert registry.recover() == "v0001"
    assert registry.current_version() == "v0001" and not (tmp_path / JOURNAL_FILE).exists()


def test_corrupt_metadata_and_log_are_set_aside_and_the_model_republished(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    make_version(registry, "v0001", "one")
    registry.promote("v0001")
    registry.append_log({"n": 1})
    (tmp_path / METADATA_FILE).write_bytes(b'{"version": "v00\0\0\0')
    (tmp_path / "retraining_log.json").write_bytes(b"\0\0\0")
    assert registry.retraining_log() == []  # readable by status, set aside by the next append
    assert registry.recover() == "v0001"
    assert registry.current_version() == "v0001"
    assert len(list(tmp_path.glob(f"{METADATA_FILE}.corrupt-*"))) == 1


def test_files_of_the_old_system_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_text("the notebook's model")
    write_json(tmp_path / METADATA_FILE, {"model_version": "2.0", "accuracy": 0.9})
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    assert registry.recover() is None
    assert (tmp_path / MODEL_FILE).read_text() == "the notebook's model"


def test_temp_names_are_unique_per_writer_and_only_a_dead_writers_are_removed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    seen: list[str] = []
    replace_atomically(tmp_path / "a.json", lambda tmp: (seen.append(tmp.name), tmp.write_text("1")))
    replace_atomically(tmp_path / "a.json", lambda tmp: (seen.append(tmp.name), tmp.write_text("2")))
    assert len(set(seen)) == 2 and all(f".{os.getpid()}." in name for name in seen)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (tmp_path / f".model_metadata.{dead}.0123abcd.tmp.json").write_text("cut short")
    (tmp_path / f".model_metadata.{os.getpid()}.0123abcd.tmp.json").write_text("being written")
    registry = ModelRegistry(tmp_path)
    registry.ensure()
    registry.recover()
    assert sorted(p.name for p in tmp_path.glob(".*.tmp*")) == [f".model_metadata.{os.getpid()}.0123abcd.tmp.json"]
