"""The arrays a training job needs, as one .npz file the parent writes into the version's
staging folder and the training process reads back: plain arrays, never pickles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.pooling import AudiosetHead

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
TRAIN, VALIDATION, TEST = (SPLIT_CODES[name] for name in ("train", "val", "test"))


@dataclass(frozen=True)
class JobData:
    features: np.ndarray
    labels: np.ndarray
    splits: np.ndarray  # SPLIT_CODES per sample
    groups: np.ndarray  # the source recording of each sample
    head: AudiosetHead | None


def write_job_data(folder: Path, features: np.ndarray, labels: np.ndarray, splits: list[str], groups: list[str],
                   head: AudiosetHead | None = None) -> None:
    """The parent's side: the snapshot's arrays into folder/job_data.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "features": features, "labels": labels, "groups": np.array(groups),
        "splits": np.array([SPLIT_CODES[s] for s in splits], dtype=np.int8),
    }
    if head is not None:
        arrays.update(audioset_kernel=head.kernel, audioset_bias=head.bias)
    np.savez(folder / files.JOB_DATA, **arrays)  # type: ignore[arg-type]


def read_job_data(folder: Path) -> JobData:
    """The training process's side."""
    with np.load(folder / files.JOB_DATA) as data:
        head = AudiosetHead(data["audioset_kernel"], data["audioset_bias"]) if "audioset_kernel" in data else None
        return JobData(data["features"], data["labels"], data["splits"], data["groups"], head)
