"""When a recording started, in UTC, and where that came from.

In order: the GUANO `Timestamp` field, the AudioMoth comment ("Recorded at HH:MM:SS
DD/MM/YYYY (UTC...)"), an AudioMoth-style name (`[ID_]YYYYMMDD_HHMMSS`, in the given
time zone, UTC by default), else the start time the user gave. An amplitude-triggered
AudioMoth file (`...T.WAV`) has its silences cut out, so offsets in it are not clock
time: it is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from ecosight_daemon.errors import AudioDecodeError

UTC = timezone.utc  # datetime.UTC is 3.11+; the package supports older Pythons

HEADER_BYTES = 64 * 1024  # RIFF chunks with GUANO or comments sit near the start
NAME_PATTERN = re.compile(r"(?:^|_)(\d{8})_(\d{6})(T?)$", re.IGNORECASE)
AUDIOMOTH_COMMENT = re.compile(
    rb"Recorded at (\d{2}):(\d{2}):(\d{2}) (\d{2})/(\d{2})/(\d{4}) \(UTC(?:([+-])(\d{1,2})(?::?(\d{2}))?)?\)")
GUANO_TIMESTAMP = re.compile(rb"Timestamp:\s*([0-9T:\-+. Z]+)")


@dataclass(frozen=True)
class RecordingClock:
    start_utc: datetime | None
    source: str  # guano | audiomoth_comment | file_name | start_time | none

    def at(self, offset_s: float) -> datetime | None:
        return None if self.start_utc is None else self.start_utc + timedelta(seconds=offset_s)


def recording_clock(path: Path, zone: tzinfo = UTC, start_time: datetime | None = None) -> RecordingClock:
    """The recording's start in UTC and its source; AudioDecodeError for a triggered file."""
    stem = path.stem
    named = NAME_PATTERN.search(stem)
    if named and named.group(3):
        raise AudioDecodeError("an amplitude-triggered AudioMoth file (T.WAV): its silences were cut out, so "
                               "offsets are not clock times; expand it to real time first")
    head = _head_bytes(path)
    for source, found in (("guano", _guano_time(head)), ("audiomoth_comment", _audiomoth_time(head))):
        if found is not None:
            return RecordingClock(found, source)
    if named:
        try:
            local = datetime.strptime(named.group(1) + named.group(2), "%Y%m%d%H%M%S").replace(tzinfo=zone)
            return RecordingClock(local.astimezone(UTC), "file_name")
        except ValueError:
            pass
    if start_time is not None:
        aware = start_time if start_time.tzinfo else start_time.replace(tzinfo=zone)
        return RecordingClock(aware.astimezone(UTC), "start_time")
    return RecordingClock(None, "none")


def _head_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(HEADER_BYTES)
    except OSError:
        return b""


def _guano_time(head: bytes) -> datetime | None:
    at = head.find(b"guan")
    if at < 0:
        return None
    found = GUANO_TIMESTAMP.search(head, at)
    if not found:
        return None
    text = found.group(1).decode("ascii", "replace").strip()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)


def _audiomoth_time(head: bytes) -> datetime | None:
    found = AUDIOMOTH_COMMENT.search(head)
    if not found:
        return None
    hour, minute, second, day, month, year = (int(found.group(i)) for i in range(1, 7))
    offset = timedelta(0)
    if found.group(7):
        offset = timedelta(hours=int(found.group(8)), minutes=int(found.group(9) or 0))
        offset = offset if found.group(7) == b"+" else -offset
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        return None
    return local.astimezone(UTC)
