"""models_dir does not grow for ever: rejected candidates' exports go first, then the oldest
version folders beyond keep_versions; the current version, the one a rollback restores and
the newest attempt always stay."""

from __future__ import annotations

import json
from pathlib import Path

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retention import prune_versions


def make_version(registry: ModelRegistry, number: int, status: str) -> str:
    version = f"v{number:04d}"
    folder = registry.version_dir(version)
    (folder / files.EXPORT_DIR).mkdir(parents=True)
    (folder / files.EXPORT_DIR / "saved_model.pb").write_bytes(b"\0" * 1000)
    (folder / files.MODEL).write_bytes(b"model")
    (folder / files.METADATA).write_text(json.dumps({"version": version, "status": status}))
    return version


def test_retention_keeps_what_matters_and_removes_the_oldest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.ensure()
    statuses = ["promoted", "rejected", "promoted", "rejected", "rejected", "promoted", "rejected", "promoted",
                "rejected", "rejected"]
    versions = [make_version(registry, i + 1, status) for i, status in enumerate(statuses)]
    current = "v0006"  # rolled back to v0006 after v0008 was promoted
    (registry.root / "model_metadata.json").write_text(json.dumps({"version": current}))
    removed = prune_versions(registry, keep_versions=4)
    left = [m["version"] for m in registry.versions()]
    assert removed == ["v0001", "v0002", "v0004", "v0005", "v0007", "v0008"]  # the oldest, skipping the kept
    assert left == ["v0003", "v0006", "v0009", "v0010"]  # v0006 current, v0003 what rollback restores
    assert versions[-1] == "v0010"
    for version in left:
        status = json.loads((registry.version_dir(version) / files.METADATA).read_text())["status"]
        has_export = (registry.version_dir(version) / files.EXPORT_DIR).is_dir()
        assert has_export == (status != "rejected" or version == "v0010"), version
    assert prune_versions(registry, keep_versions=4) == []  # nothing more to do


def test_nothing_to_prune_in_an_empty_models_dir(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.ensure()
    assert prune_versions(registry, keep_versions=3) == []
