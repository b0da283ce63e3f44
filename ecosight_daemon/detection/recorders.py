"""Which recorder a recording came from: its sub-folder under the recordings folder, else the
device id an AudioMoth-style name carries before its clock (`AM01_20260501_060000.WAV`)."""

from __future__ import annotations

from pathlib import PurePosixPath

from ecosight_daemon.detection.clock import NAME_PATTERN

UNKNOWN_RECORDER = "(unnamed recorder)"


def recorder_of(relpath: str) -> str:
    """The recorder of a recording given by its path under the recordings folder."""
    path = PurePosixPath(relpath)
    if len(path.parts) > 1:
        return path.parts[0]
    named = NAME_PATTERN.search(path.stem)
    if named and named.start() > 0:
        return path.stem[:named.start()]
    return UNKNOWN_RECORDER
