"""When a recording started, in UTC, and where that came from; never an exception.

In order: the GUANO `Timestamp` field (read with the format's reference library, `guano`),
the AudioMoth comment ("Recorded at HH:MM:SS DD/MM/YYYY (UTC...)"), an AudioMoth-style
name (`[ID_]YYYYMMDD_HHMMSS`, in the given time zone, UTC by default), else the start time
the user gave. A clock before 1990 or more than a day ahead of this machine's is dropped
with its reason (`invalid` when no other source is left); sources that disagree by more
than a minute are noted. An amplitude-triggered AudioMoth file (`...T.WAV`) has its
silences cut out, so offsets in it are not clock time: it is refused.

Reading the file (`read_clock_evidence`) is separate from judging it (`recording_clock`):
the reading runs in the recording reader's process, which a hostile file cannot hang.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from ecosight_daemon.errors import AudioDecodeError, EcosightError

UTC = timezone.utc  # datetime.UTC is 3.11+; the package supports older Pythons

HEADER_BYTES = 64 * 1024  # the AudioMoth comment sits in the INFO chunk near the start
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
AHEAD_ALLOWED = timedelta(days=1)  # of the machine's clock
DISAGREEMENT = timedelta(minutes=1)
NAME_PATTERN = re.compile(r"(?:^|_)(\d{8})_(\d{6})(T?)$", re.IGNORECASE)
AUDIOMOTH_COMMENT = re.compile(
    r"Recorded at (\d{2}):(\d{2}):(\d{2}) (\d{2})/(\d{2})/(\d{4}) \(UTC(?:([+-])(\d{1,2})(?::?(\d{2}))?)?\)")
SOURCE_NAMES = {"guano": "GUANO Timestamp", "audiomoth_comment": "AudioMoth comment", "file_name": "file name",
                "start_time": "given start time"}


@dataclass(frozen=True)
class ClockEvidence:
    """What a file says about its clock, as text (it crosses a process boundary as JSON)."""

    guano: str | None = None  # the GUANO Timestamp, ISO 8601
    guano_problem: str | None = None  # why the GUANO metadata could not be read
    comment: str | None = None  # the AudioMoth "Recorded at ..." sentence

    def as_json(self) -> dict[str, str | None]:
        return {"guano": self.guano, "guano_problem": self.guano_problem, "comment": self.comment}

    @classmethod
    def from_json(cls, data: object) -> ClockEvidence:
        if not isinstance(data, dict):
            return cls()
        return cls(*(value if isinstance(value, str) else None
                     for value in (data.get("guano"), data.get("guano_problem"), data.get("comment"))))


@dataclass(frozen=True)
class RecordingClock:
    start_utc: datetime | None
    source: str  # guano | audiomoth_comment | file_name | start_time | invalid | none
    note: str | None = None  # a clock dropped as implausible, or sources that disagree

    def at(self, offset_s: float) -> datetime | None:
        return clock_at(self.start_utc, offset_s)


def clock_at(start: datetime | None, offset_s: float) -> datetime | None:
    """`start` + `offset_s`, or None when there is no start or the sum leaves the calendar."""
    if start is None:
        return None
    try:
        return start + timedelta(seconds=offset_s)
    except (OverflowError, ValueError):
        return None


def iso_utc(moment: datetime | None) -> str | None:
    """`2026-05-01T06:00:00.000Z`, or None (also for a moment that cannot be shown in UTC)."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return None


def parse_utc(text: str | None) -> datetime | None:
    """A stored ISO time back as an aware datetime; None for anything else."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def iso_utc_at(start_text: str | None, offset_s: float) -> str | None:
    """A stored start plus an offset, as ISO text; None when either is unusable."""
    return iso_utc(clock_at(parse_utc(start_text), offset_s))


def refuse_triggered(path: Path) -> None:
    """AudioDecodeError for an amplitude-triggered AudioMoth file (T.WAV)."""
    named = NAME_PATTERN.search(path.stem)
    if named and named.group(3):
        raise AudioDecodeError("an amplitude-triggered AudioMoth file (T.WAV): its silences were cut out, so "
                               "offsets are not clock times; expand it to real time first")


def recording_clock(path: Path, evidence: ClockEvidence, zone: tzinfo = UTC, start_time: datetime | None = None,
                    now: datetime | None = None) -> RecordingClock:
    """The first plausible clock among the file's sources (then the given start time), with notes."""
    refuse_triggered(path)
    now = now or datetime.now(UTC)
    notes: list[str] = []
    if evidence.guano_problem:
        notes.append(f"GUANO metadata unreadable ({evidence.guano_problem})")
    candidates = [("guano", _local(parse_utc_or_naive(evidence.guano), zone, notes, "GUANO Timestamp",
                                   evidence.guano)),
                  ("audiomoth_comment", _audiomoth_time(evidence.comment, notes)),
                  ("file_name", _name_time(path.stem, zone, notes))]
    if start_time is not None:
        candidates.append(("start_time", _local(start_time, zone, notes, "given start time", str(start_time))))
    plausible: list[tuple[str, datetime]] = []
    for source, moment in candidates:
        if moment is None:
            continue
        if moment < EARLIEST or moment > now + AHEAD_ALLOWED:
            notes.append(f"{SOURCE_NAMES[source]} {iso_utc(moment)} is implausible (before 1990 or more than a "
                         "day ahead of this machine's clock); not used")
        else:
            plausible.append((source, moment))
    if not plausible:
        # Notes here can only be about sources that were present but unusable.
        return RecordingClock(None, "invalid" if notes else "none", "; ".join(notes) or None)
    chosen_source, chosen = plausible[0]
    for source, moment in plausible[1:]:
        if source != "start_time" and abs(moment - chosen) > DISAGREEMENT:
            notes.append(f"{SOURCE_NAMES[source]} says {iso_utc(moment)}, {abs(moment - chosen).total_seconds():.0f}"
                         f" s from the {SOURCE_NAMES[chosen_source]} ({iso_utc(chosen)}), which is used")
    return RecordingClock(chosen, chosen_source, "; ".join(notes) or None)


def parse_utc_or_naive(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None


def _local(moment: datetime | None, zone: tzinfo, notes: list[str], what: str, text: str | None) -> datetime | None:
    """An aware moment in UTC (a naive one is read in `zone`); None, with a note, when that overflows."""
    if moment is None:
        if text:
            notes.append(f"{what} {text!r} is not a date")
        return None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    except (OverflowError, ValueError):
        notes.append(f"{what} {text!r} cannot be converted to UTC (out of the calendar); not used")
        return None


def _name_time(stem: str, zone: tzinfo, notes: list[str]) -> datetime | None:
    named = NAME_PATTERN.search(stem)
    if not named:
        return None
    text = named.group(1) + "_" + named.group(2)
    try:
        local = datetime.strptime(named.group(1) + named.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        notes.append(f"file name time {text!r} is not a date")
        return None
    return _local(local, zone, notes, "file name time", text)


def _audiomoth_time(comment: str | None, notes: list[str]) -> datetime | None:
    found = AUDIOMOTH_COMMENT.search(comment or "")
    if not found:
        return None
    hour, minute, second, day, month, year = (int(found.group(i)) for i in range(1, 7))
    try:
        offset = timedelta(0)
        if found.group(7):
            offset = timedelta(hours=int(found.group(8)), minutes=int(found.group(9) or 0))
            offset = offset if found.group(7) == "+" else -offset
        local = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except (ValueError, OverflowError):
        notes.append(f"AudioMoth comment time {found.group(0)!r} is not a date")
        return None
    return _local(local, UTC, notes, "AudioMoth comment time", found.group(0))


def read_clock_evidence(path: Path) -> ClockEvidence:
    """GUANO (with the `guano` library) and the AudioMoth comment, read from the file.

    Runs where a hostile file can do no harm (the recording reader's process); whatever
    the metadata holds comes back as text or as a problem, never as an exception."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError:
        return ClockEvidence()
    comment_at = head.find(b"Recorded at ")
    comment = head[comment_at:comment_at + 200].decode("latin-1") if comment_at >= 0 else None
    guano_text, problem = None, None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        guano_text, problem = _guano_timestamp(path)
    return ClockEvidence(guano_text, problem, comment)


def _guano_timestamp(path: Path) -> tuple[str | None, str | None]:
    import logging

    import guano

    logging.getLogger("guano").setLevel(logging.ERROR)  # it logs each field it cannot coerce
    try:
        metadata = guano.GuanoFile(str(path))
        value = metadata.get("Timestamp") if metadata else None
    except Exception as exc:  # the library raises what its parsers raise (ValueError, wave.Error, struct.error...)
        return None, f"{type(exc).__name__}: {exc}"[:200]
    if value is None or value == "":
        return None, None
    if isinstance(value, datetime):
        return value.isoformat(), None
    return None, f"Timestamp {str(value)[:60]!r} is not ISO 8601"


def parse_zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise EcosightError(f"time zone {name!r}: not a time zone name (try Africa/Libreville or UTC)") from exc
