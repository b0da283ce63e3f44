"""Field-recording fixtures from the dev corpus: a training workspace without some source
recordings, and soundscapes made only of those, so a model never heard what it is run on."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ecosight_daemon.audio import decode_audio
from ecosight_daemon.training.event_mixing import Soundscape, build_soundscape
from testkit.daemon_process import seed_onnx_body


@dataclass(frozen=True)
class CorpusSplit:
    """Dev clips by source recording: `held_out` ones never reach the training workspace."""

    train: list[dict[str, str]]
    held_out: list[dict[str, str]]


def manifest(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "MANIFEST.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def split_by_recording(corpus: Path, every: int = 5, offset: int = 0) -> CorpusSplit:
    """Every `every`-th source recording (sorted by name, from `offset`) held out."""
    rows = manifest(corpus)
    groups = sorted({r["group"] for r in rows})
    held = set(groups[offset::every])
    return CorpusSplit([r for r in rows if r["group"] not in held], [r for r in rows if r["group"] in held])


def training_workspace(root: Path, handle: str, corpus: Path, rows: list[dict[str, str]]) -> Path:
    """root/config.toml, root/audio/<class>/ with `rows`' files, root/models/ (the session's ONNX body)."""
    for row in rows:
        target = root / "audio" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / row["file"], target)
    (root / "config.toml").write_text(
        f'[paths]\naudio_dir = "audio"\nmodels_dir = "models"\n[embedding]\nyamnet_handle = "{handle}"\n')
    seed_onnx_body(root / "models")
    return root


def soundscape_from(corpus: Path, rows: list[dict[str, str]], seconds: float, seed: int,
                    event_labels: tuple[str, ...] = ("gun_shot",), **options: object) -> Soundscape:
    """A soundscape of the `clips` rows as background and the rows of `event_labels` as events."""
    def wave(row: dict[str, str]) -> np.ndarray:
        return decode_audio((corpus / row["file"]).read_bytes(), 600).waveform

    backgrounds = [wave(r) for r in rows if r["class"] == "clips"]
    events = [(r["class"], r["file"], wave(r)) for r in rows if r["class"] in event_labels]
    return build_soundscape(backgrounds, events, seconds, np.random.default_rng(seed), **options)  # type: ignore[arg-type]


def write_recording(path: Path, soundscape: Soundscape, rate: int = 16_000, channels: int = 1) -> Path:
    """The soundscape as a PCM_16 WAV at `rate` with `channels` identical channels."""
    import soxr

    audio = soundscape.waveform if rate == 16_000 else soxr.resample(soundscape.waveform, 16_000, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.repeat(np.asarray(audio)[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path
