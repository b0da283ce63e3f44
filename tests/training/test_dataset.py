from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ecosight_daemon.artifacts.split_rule import Split, compile_group_patterns, group_key, split_by_hash
from ecosight_daemon.config import DEFAULT_GROUP_PATTERNS
from ecosight_daemon.store.database import Database
from ecosight_daemon.training.dataset import Snapshot, SnapshotOptions, assign_splits, take_snapshot

PATTERNS = compile_group_patterns(DEFAULT_GROUP_PATTERNS)
FRACTIONS = (0.7, 0.15, 0.15)


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("gun_shot/102305-6-0-0.wav", "102305"),
        ("gun_shot/102305-6-3-12.WAV", "102305"),
        ("gun_shot/102305-6-0-0_aug3.wav", "102305"),
        ("dog_bark/bark-pitch+2.wav", "bark"),
        ("dog_bark/bark_aug1_noise.wav", "bark"),
        ("dog_bark/bark-speed0.9.wav", "bark"),
        ("dog_bark/bark.wav", "bark"),
        ("clips/crestedargus_20220323_0502261.wav", "crestedargus_20220323_0502261"),
    ],
)
def test_group_keys(path: str, group: str) -> None:
    assert group_key(path, PATTERNS) == group


def test_hash_split_is_a_function_of_the_key_and_near_the_fractions() -> None:
    groups = [f"rec{i}" for i in range(3000)]
    splits = [split_by_hash(g, FRACTIONS) for g in groups]
    assert splits == [split_by_hash(g, FRACTIONS) for g in groups]
    share = Counter(splits)
    assert abs(share[Split.TRAIN] / 3000 - 0.70) < 0.03
    assert abs(share[Split.TEST] / 3000 - 0.15) < 0.03


def test_recorded_splits_win_and_missing_test_or_val_is_filled_from_train_only() -> None:
    groups = {"a": {f"g{i}" for i in range(6)}}
    recorded = {g: Split.TRAIN for g in groups["a"]}
    recorded["g0"] = Split.TEST
    splits, warnings = assign_splits(groups, recorded, FRACTIONS)
    assert splits["g0"] is Split.TEST
    assert Counter(splits.values()) == {Split.TRAIN: 4, Split.TEST: 1, Split.VAL: 1}
    assert warnings == []
    # Nothing ever leaves test, even when every group is recorded as test.
    all_test = {g: Split.TEST for g in groups["a"]}
    assert set(assign_splits(groups, all_test, FRACTIONS)[0].values()) == {Split.TEST}


def test_too_few_groups_warns() -> None:
    _, warnings = assign_splits({"rare": {"x", "y"}}, {}, FRACTIONS)
    assert "rare" in warnings[0] and "too few" in warnings[0]


def fill(store: Database, label: str, names: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index, name in enumerate(names):
        sha = f"{label}-{name}"
        patches = rng.standard_normal((3, 1024)).astype(np.float32)
        store.clips.record_embedding(f"{label}/{name}.wav", label, 1, index, sha, patches, 1.0)


def options(min_files: int = 3) -> SnapshotOptions:
    return SnapshotOptions(min_files, FRACTIONS, DEFAULT_GROUP_PATTERNS, "mean_max")


def test_snapshot_groups_never_cross_splits_and_stay_put(tmp_path: Path) -> None:
    store = Database.open(tmp_path / "c.sqlite3")
    store.clips.adopt_model("m", {})
    fill(store, "gun_shot", [f"{1000 + i // 4}-6-0-{i % 4}" for i in range(80)], 1)
    fill(store, "dog_bark", [f"bark{i}" for i in range(40)] + [f"bark{i}_aug1" for i in range(40)], 2)
    first = take_snapshot(store, options())
    assert first.features.shape == (160, 2048)
    assert_no_group_on_two_sides(first)
    first_test = {s.path for s in first.samples if s.split is Split.TEST}
    assert first_test

    fill(store, "gun_shot", [f"{5000 + i}-6-0-0" for i in range(60)], 3)
    second = take_snapshot(store, options())
    assert_no_group_on_two_sides(second)
    second_test = {s.path for s in second.samples if s.split is Split.TEST}
    assert first_test <= second_test  # the test set only grows
    assert {s.path: s.split for s in first.samples}.items() <= {s.path: s.split for s in second.samples}.items()


def assert_no_group_on_two_sides(snapshot: Snapshot) -> None:
    sides: dict[str, set[Split]] = {}
    for sample in snapshot.samples:
        sides.setdefault(sample.group, set()).add(sample.split)
    assert all(len(s) == 1 for s in sides.values())


def test_snapshot_leaves_out_conflicts_duplicates_and_small_classes(tmp_path: Path) -> None:
    store = Database.open(tmp_path / "c.sqlite3")
    store.clips.adopt_model("m", {})
    fill(store, "gun_shot", [f"shot{i}" for i in range(6)], 1)
    fill(store, "clips", [f"clip{i}" for i in range(6)], 2)
    fill(store, "rare", ["only1", "only2"], 3)
    store.clips.note_file("gun_shot/dup.wav", "gun_shot", 1, 1, "gun_shot-shot0")  # same bytes, same class
    store.clips.note_file("clips/conflict.wav", "clips", 1, 1, "gun_shot-shot1")  # same bytes, other class
    snapshot = take_snapshot(store, options(min_files=3))
    assert snapshot.classes == ["clips", "gun_shot"]
    assert "rare" in snapshot.excluded_classes and "fewer than min_class_files" in snapshot.excluded_classes["rare"]
    hashes = [s.sha256 for s in snapshot.samples]
    assert len(hashes) == len(set(hashes)) == 6 + 5  # shot1 left out as a conflict, dup counted once
    assert "gun_shot-shot1" not in hashes
