"""The models_dir layout: version folders, the published files, promotion and recovery.

Every file is written durably (util/durable.py). A promotion first
records which version it installs in a small journal, then copies that version's files
over the operator-facing ones, metadata last; a promotion cut short by a crash is
finished by `recover()` on the next start, so models/ always ends up describing one
complete version.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.util import pause
from ecosight_daemon.util.digest import sha256_of
from ecosight_daemon.util.durable import (
    TEMP_NAME,
    copy_atomically,
    fsync_path,
    fsync_tree,
    read_json,
    read_json_or_set_aside,
    write_json,
)
from ecosight_daemon.util.instance_lock import pid_alive
from ecosight_daemon.versions.retraining_log import RetrainStatus, append_to_log, read_log

if TYPE_CHECKING:
    from ecosight_daemon.artifacts.published_model import PublishedModel

logger = logging.getLogger(__name__)

MODEL_FILE = "yamnet_classifier_v2.keras"
METADATA_FILE = "model_metadata.json"
METRICS_FILE = "performance_metrics.json"
HISTORY_PICKLE = "training_history.pkl"
HISTORY_JSON = "training_history.json"
CLASS_NAMES_FILE = "class_names.json"
JOURNAL_FILE = ".promotion.json"

# version-folder name -> operator-facing name; metadata goes last on purpose.
PUBLISHED_FILES = (
    (files.MODEL, MODEL_FILE),
    (files.CLASS_NAMES, CLASS_NAMES_FILE),
    (files.METRICS, METRICS_FILE),
    (files.HISTORY_PICKLE, HISTORY_PICKLE),
    (files.HISTORY_JSON, HISTORY_JSON),
    (files.METADATA, METADATA_FILE),
)
VERSION_PATTERN = re.compile(r"v(\d{4,})")


class DamagedVersion(OSError):
    """A version folder whose model file no longer matches its recorded sha256."""


class ModelRegistry:
    """The models_dir layout: versions/<version>/, the published files, the log."""

    def __init__(self, models_dir: Path) -> None:
        self.root = models_dir
        self.versions_dir = models_dir / "versions"

    def ensure(self) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    # --- versions -------------------------------------------------------------------

    def next_version(self) -> str:
        numbers = [0]
        if self.versions_dir.is_dir():
            for entry in self.versions_dir.iterdir():
                match = VERSION_PATTERN.fullmatch(entry.name.removeprefix(".staging-"))
                if match:
                    numbers.append(int(match.group(1)))
        return f"v{max(numbers) + 1:04d}"

    def staging_dir(self, version: str) -> Path:
        return self.versions_dir / f".staging-{version}"

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    def finalize(self, version: str) -> Path:
        """Make a fully written staging folder visible as versions/<version>."""
        staging, final = self.staging_dir(version), self.version_dir(version)
        fsync_tree(staging)  # a power cut after the rename must not leave empty files in it
        os.rename(staging, final)
        fsync_path(self.versions_dir)
        return final

    def versions(self) -> list[dict[str, Any]]:
        """Every finished version's metadata, oldest first."""
        found = []
        if self.versions_dir.is_dir():
            for entry in sorted(self.versions_dir.iterdir()):
                metadata = read_json(entry / files.METADATA) if VERSION_PATTERN.fullmatch(entry.name) else None
                if metadata is not None:
                    found.append(metadata)
        return found

    def previous_promoted(self, current: str | None) -> str | None:
        """The newest version older than `current` that passed its gate (what rollback restores)."""
        promoted = [m["version"] for m in self.versions() if m.get("status") == RetrainStatus.PROMOTED.value]
        earlier = [v for v in promoted if current is None or v < current]
        return earlier[-1] if earlier else None

    def remove_stale_staging(self) -> None:
        """Staging folders are left only by a crash; nothing in them was ever published."""
        if self.versions_dir.is_dir():
            for entry in self.versions_dir.glob(".staging-*"):
                logger.info("removing unfinished version folder %s", entry.name)
                shutil.rmtree(entry, ignore_errors=True)
            for entry in self.root.glob(".*.tmp*"):  # a write cut short (by a crash) before its rename
                writer = TEMP_NAME.fullmatch(entry.name)
                if writer is not None and not pid_alive(int(writer.group(1))):
                    entry.unlink(missing_ok=True)
            for entry in self.versions_dir.glob(f"*/{files.EXPORT_PARTIAL}"):
                logger.info("removing unfinished export %s", entry.relative_to(self.root))
                shutil.rmtree(entry, ignore_errors=True)

    # --- the published model --------------------------------------------------------

    def current_metadata(self) -> dict[str, Any] | None:
        metadata = read_json_or_set_aside(self.root / METADATA_FILE)
        return metadata if isinstance(metadata, dict) else None

    def current_model(self) -> PublishedModel | None:
        """The promoted model, loaded (TensorFlow), or None when there is none yet."""
        from ecosight_daemon.artifacts.published_model import PublishedModel

        metadata, path = self.current_metadata(), self.current_model_path()
        if metadata is None or path is None:
            return None
        return PublishedModel.load(path, metadata, path.parent / files.CLASSIFIER_ARRAYS)

    def intact(self, version: str) -> bool:
        """A finished version whose model file still has the sha256 its metadata names."""
        folder = self.version_dir(version)
        try:
            metadata = read_json(folder / files.METADATA)
            return bool(metadata) and sha256_of(folder / files.MODEL) == metadata.get("model_sha256")
        except (OSError, ValueError):
            return False

    def current_version(self) -> str | None:
        metadata = self.current_metadata()
        return metadata.get("version") if metadata else None

    def current_model_path(self) -> Path | None:
        """The current model, read from its version folder so it always matches the metadata."""
        version = self.current_version()
        if version is None:
            return None
        path = self.version_dir(version) / files.MODEL
        return path if path.is_file() else self.root / MODEL_FILE

    def promote(self, version: str) -> None:
        """Install a finished version as the current model (atomic per file, journaled)."""
        source = self.version_dir(version)
        if not (source / files.METADATA).is_file():
            raise FileNotFoundError(f"version {version} does not exist under {self.versions_dir}")
        if not self.intact(version):
            raise DamagedVersion(f"version {version}'s model.keras does not match the sha256 in its metadata")
        write_json(self.root / JOURNAL_FILE, {"version": version, "started": time.time()})
        pause.point("promotion")
        for name, published in PUBLISHED_FILES:
            if (source / name).is_file():
                copy_atomically(source / name, self.root / published)
        (self.root / JOURNAL_FILE).unlink()
        fsync_path(self.root)

    def promotion_pending(self) -> bool:
        return (self.root / JOURNAL_FILE).exists()

    def recover(self) -> str | None:
        """Finish a promotion a crash interrupted, and make sure the published model is
        intact; returns the version it (re)published, if any.

        A damaged version (after a power cut, a model file whose sha256 no longer matches)
        is never published: the newest intact promoted version is, with a loud log line.
        """
        self.remove_stale_staging()
        journal = read_json_or_set_aside(self.root / JOURNAL_FILE)
        if isinstance(journal, dict) and journal.get("version"):
            version = str(journal["version"])
            if self.intact(version):
                logger.warning("finishing the interrupted promotion of %s", version)
                self.promote(version)
                return version
            logger.error("the interrupted promotion of %s cannot be finished: the version is damaged", version)
            (self.root / JOURNAL_FILE).unlink(missing_ok=True)
            return self._publish_newest_intact()
        (self.root / JOURNAL_FILE).unlink(missing_ok=True)
        metadata = self.current_metadata()
        if metadata is None:
            return self._publish_newest_intact() if self.versions() else None
        version = str(metadata.get("version"))
        if "model_sha256" not in metadata or not self.version_dir(version).is_dir():
            return None  # not written by this program (the old system's files): leave them be
        published = self.root / MODEL_FILE
        try:
            published_ok = published.is_file() and sha256_of(published) == metadata.get("model_sha256")
        except OSError:
            published_ok = False
        if published_ok and self.intact(version):
            return None
        if self.intact(version):
            logger.error("the published %s does not match version %s; publishing that version again",
                         MODEL_FILE, version)
            self.promote(version)
            return version
        logger.error("the current version %s is damaged", version)
        return self._publish_newest_intact(exclude=version)

    def _publish_newest_intact(self, exclude: str | None = None) -> str | None:
        for metadata in reversed(self.versions()):
            version = metadata.get("version")
            promoted = metadata.get("status") == RetrainStatus.PROMOTED.value
            if version and version != exclude and promoted and self.intact(version):
                logger.error("publishing %s, the newest intact promoted version, as the current model", version)
                self.promote(version)
                return str(version)
        logger.error("no intact promoted version is left in %s; the next retrain will make one", self.versions_dir)
        return None

    # --- the retraining log (its file and format: retraining_log.py) ----------------------

    def retraining_log(self) -> list[dict[str, Any]]:
        return read_log(self.root)

    def append_log(self, entry: dict[str, Any]) -> None:
        append_to_log(self.root, entry)
