"""Which split a file falls in, the rule every version was trained and judged by: a file's
group is its source recording (regexes on its name), and a group's split is a salted hash
of its key. Review uses it too: recordings whose clips would land in the test split are
never queued."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import PurePosixPath

REVIEW_CLIP_MARK = "__review_"  # in a review clip's name: <recording>__review_<ms>ms-i<id> (review/clips.py)
SPLIT_SALT = "ecosight-split-v1"  # changing it would move groups between splits


class Split(str, Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


def group_key(relpath: str, patterns: Iterable[re.Pattern[str]]) -> str:
    """The source-recording key of a file; the file itself when no pattern applies."""
    key = PurePosixPath(relpath).stem
    for pattern in patterns:
        match = pattern.fullmatch(key)
        if match:
            key = match.group("group")
    return key


def compile_group_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def group_hash(group: str) -> float:
    """A uniform number in [0, 1) that depends only on the group key."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(group: str, fractions: tuple[float, float, float]) -> Split:
    u = group_hash(group)
    if u < fractions[0]:
        return Split.TRAIN
    return Split.VAL if u < fractions[0] + fractions[1] else Split.TEST
