"""An agreed review item becomes a training clip in audio_dir/<class>/: cut from its
recording by seeking, centred on the item, resampled to 16 kHz mono, written under a
hidden temporary name and renamed in (the watcher sees one finished file, once).

The name carries the recording and the item (`<recording>__review_<ms>ms-i<id>.wav`): every
clip cut from one recording falls in one split group (config.py's default group patterns),
and no two items share a clip, so an item writes and removes only its own. A long recording
path is shortened (its start and a hash of the whole) to keep the name under 255 bytes."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile

from ecosight_daemon.artifacts.split_rule import REVIEW_CLIP_MARK
from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.detection.recording_reader import ReaderInterrupted
from ecosight_daemon.detection.snippets import cut
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.store.review import ReviewItem
from ecosight_daemon.util import pause
from ecosight_daemon.util.durable import TEMP_NAME, fsync_path, replace_atomically

logger = logging.getLogger(__name__)
CLIP_MARK = REVIEW_CLIP_MARK
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


MAX_STEM_CHARS = 150  # with the mark, offset, id and a writer's temporary suffix: under 255 bytes


def recording_stem(recording: str) -> str:
    """A recording as one file-name-safe ASCII word: its path without the extension, folders
    joined by '--'; a long one cut short and told apart by a hash of the whole."""
    stem = _UNSAFE.sub("-", PurePosixPath(recording).with_suffix("").as_posix().replace("/", "--")).strip("-.")
    if len(stem) <= MAX_STEM_CHARS:
        return stem
    return f"{stem[:MAX_STEM_CHARS - 11]}-{hashlib.sha256(stem.encode()).hexdigest()[:10]}"


def clip_relpath(item: ReviewItem, label: str) -> str:
    return f"{label}/{recording_stem(item.recording)}{CLIP_MARK}{round(item.centre_s * 1000)}ms-i{item.id}.wav"


def write_clip(item: ReviewItem, label: str, audio_dir: Path, clip_s: float) -> str:
    """The clip written (durably, atomically); its path relative to audio_dir."""
    try:
        samples, rate = cut(Path(item.path), item.centre_s, clip_s)
    except (AudioDecodeError, TimeoutError, ReaderInterrupted) as exc:
        raise OSError(f"cannot cut the clip from {item.path}: {exc}") from exc
    if len(samples) == 0:
        raise OSError(f"nothing to cut at {item.centre_s:.2f} s of {item.path}")
    if rate != TARGET_SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, TARGET_SAMPLE_RATE).astype(np.float32)
    relpath = clip_relpath(item, label)
    target = audio_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), TARGET_SAMPLE_RATE, subtype="PCM_16", format="WAV")
        pause.point("review_export")  # tests kill the daemon here: a temp file, no clip yet

    replace_atomically(target, write)
    return relpath


def remove_clip(relpath: str, audio_dir: Path) -> None:
    target = audio_dir / relpath
    target.unlink(missing_ok=True)
    if target.parent.is_dir():
        fsync_path(target.parent)


def remove_stale_temporaries(audio_dir: Path) -> int:
    """Temporary clips a killed export left behind (hidden: never ingested); how many."""
    removed = 0
    for folder in (p for p in audio_dir.iterdir() if p.is_dir()) if audio_dir.is_dir() else ():
        for path in folder.glob(f".*{CLIP_MARK}*"):
            if TEMP_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
