"""Bounded growth of models_dir over months: every retrain, promoted or rejected, leaves a
version folder of tens of MB. After each attempt the exports of rejected candidates go
first (nobody serves them; their metrics and report stay), then the oldest version folders
beyond [promotion] keep_versions. The current version, the one a rollback would restore
and the newest attempt are always kept."""

from __future__ import annotations

import logging
import shutil

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retraining_log import RetrainStatus

logger = logging.getLogger(__name__)


def prune_versions(registry: ModelRegistry, keep_versions: int) -> list[str]:
    """Apply the retention rule; returns the versions whose folders were removed."""
    versions = [m for m in registry.versions() if m.get("version")]
    if not versions:
        return []
    current = registry.current_version()
    protected = {current, registry.previous_promoted(current), versions[-1]["version"]}
    for metadata in versions:
        export = registry.version_dir(metadata["version"]) / files.EXPORT_DIR
        if (metadata.get("status") == RetrainStatus.REJECTED.value and metadata["version"] not in protected
                and export.is_dir()):
            shutil.rmtree(export, ignore_errors=True)
            logger.info("removed the export of rejected candidate %s", metadata["version"])
    removable = [m["version"] for m in versions if m["version"] not in protected]
    excess = len(versions) - keep_versions
    removed = removable[:max(0, excess)]
    for version in removed:
        shutil.rmtree(registry.version_dir(version), ignore_errors=True)
    if removed:
        logger.info("removed version folder(s) %s (keep_versions = %d)", ", ".join(removed), keep_versions)
    return removed
