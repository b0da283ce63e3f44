"""What a retrain learns from: cached embeddings, grouped by source recording, split stably.

A group is the recording a clip came from (a configurable regex on the file name), so
slices and augmented copies of one recording never sit on both sides of a split. A
group's split is a hash of its key, recorded in the cache: a clip in the test split
stays there in every later retrain, and the test set only grows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ecosight_daemon.artifacts.split_rule import Split, compile_group_patterns, group_hash, group_key, split_by_hash
from ecosight_daemon.pooling import AudiosetHead, pool_clips
from ecosight_daemon.store.database import Database

logger = logging.getLogger(__name__)

def assign_splits(
    groups_by_class: Mapping[str, set[str]],
    recorded: Mapping[str, Split],
    fractions: tuple[float, float, float],
) -> tuple[dict[str, Split], list[str]]:
    """Every group's split, keeping recorded ones, plus warnings.

    New groups go where their hash says. A class with at least three groups but
    none in val or test gets its train group of highest hash moved there: a group
    may move out of train, never out of test, so the test set only grows.
    """
    splits = {group: recorded.get(group) or split_by_hash(group, fractions)
              for groups in groups_by_class.values() for group in groups}
    warnings = []
    for label, groups in sorted(groups_by_class.items()):
        if len(groups) < 3:
            warnings.append(
                f"class {label} has {len(groups)} source recording(s), too few for a "
                "train/val/test split; add recordings from more sources"
            )
            continue
        for needed in (Split.TEST, Split.VAL):
            if any(splits[g] is needed for g in groups):
                continue
            movable = sorted((g for g in groups if splits[g] is Split.TRAIN), key=group_hash)
            if len(movable) > 1:
                splits[movable[-1]] = needed
    return splits, warnings


@dataclass(frozen=True)
class Sample:
    path: str
    sha256: str
    label: str
    group: str
    split: Split


@dataclass
class Snapshot:
    """The training data of one retrain, frozen at the moment it was taken."""

    samples: list[Sample]
    features: np.ndarray  # (n, d) float32, pooled per clip
    classes: list[str]
    embedding_model_id: str
    pooling: str
    excluded_classes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def indices(self, split: Split) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.samples) if s.split is split], dtype=np.int64)

    def labels(self) -> np.ndarray:
        return np.array([self.classes.index(s.label) for s in self.samples], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per split per class."""
        table: dict[str, dict[str, int]] = {s.value: {c: 0 for c in self.classes} for s in Split}
        for sample in self.samples:
            table[sample.split.value][sample.label] += 1
        return table


@dataclass(frozen=True)
class SnapshotOptions:
    min_class_files: int
    fractions: tuple[float, float, float]
    group_patterns: tuple[str, ...]
    pooling: str


def take_snapshot(store: Database, options: SnapshotOptions, head: AudiosetHead | None = None) -> Snapshot:
    """Embedded, conflict-free files of big-enough classes, pooled and split."""
    if store.clips.model_id is None:
        raise ValueError("the cache has no embedding model yet; run `ecosight-daemon embed` first")
    patterns = compile_group_patterns(options.group_patterns)
    conflicts = store.clips.conflicting_hashes()
    unique: dict[str, tuple[str, str]] = {}  # sha256 -> (path, label); copies count once
    for record in store.clips.files():
        if record.state.value == "embedded" and record.label and record.sha256 not in conflicts:
            unique.setdefault(record.sha256, (record.path, record.label))  # type: ignore[arg-type]
    per_class: dict[str, list[str]] = {}
    for sha256, (_, label) in unique.items():
        per_class.setdefault(label, []).append(sha256)
    excluded = {
        label: f"{len(hashes)} file(s), fewer than min_class_files ({options.min_class_files})"
        for label, hashes in per_class.items() if len(hashes) < options.min_class_files
    }
    for label, reason in sorted(excluded.items()):
        logger.warning("class %s left out of training: %s", label, reason)
    classes = sorted(label for label in per_class if label not in excluded)

    keyed = sorted(
        (path, sha256, label, group_key(path, patterns))
        for sha256, (path, label) in unique.items() if label in classes
    )
    groups_by_class: dict[str, set[str]] = {}
    for _, _, label, group in keyed:
        groups_by_class.setdefault(label, set()).add(group)
    recorded = {group: Split(split) for group, split in store.splits.recorded().items()}
    splits, warnings = assign_splits(groups_by_class, recorded, options.fractions)
    store.splits.record({g: s.value for g, s in splits.items()})
    for warning in warnings:
        logger.warning("%s", warning)

    samples = [Sample(path, sha, label, group, splits[group]) for path, sha, label, group in keyed]
    features = pool_clips([store.clips.embeddings_for(s.sha256) for s in samples], options.pooling, head)  # type: ignore[misc]
    return Snapshot(
        samples, features.astype(np.float32), classes, store.clips.model_id, options.pooling,
        excluded, warnings,
    )
