from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecosight_daemon.artifacts import (
    JOURNAL_FILE,
    MODEL_FILE,
    ModelRegistry,
    copy_atomically,
    replace_atomically,
    write_json,
)


def make_version(registry: ModelRegistry, version: str, payload: str) -> None:
    staging = registry.staging_dir(version)
    staging.mkdir(parents=True)
    (staging / "model.keras").write_text(f"model {payload}")
    (staging / "class_names.json").write_text(json.dumps([payload]))
    write_json(staging / "metadata.json", {"version": version, "status": "promoted"})
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
