"""The rules for names under audio_dir: which folder is a class, which labels are usable,
how a path is keyed in the index, and the walk that finds audio files.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ecosight_daemon.audio import is_audio_name
from ecosight_daemon.ingest.limits import SHORTAGE_ERRNOS
from ecosight_daemon.util.folder_walk import walk_files

logger = logging.getLogger(__name__)

NO_CLASS_REASON = "not in a class folder; move it into <audio_dir>/<class>/"
# A label ends up in logs, JSON, CSV manifests, HTML reports and the exported model:
# letters (any script), digits and a few separators, starting with a letter or digit.
USABLE_LABEL = re.compile(r"[^\W_](?:[\w .+()-]{0,62}[\w.+()-])?")
@dataclass(frozen=True)
class FoundFile:
    """An audio-named entry under audio_dir, with why it cannot be used, if it cannot."""

    relpath: str
    label: str
    size: int
    mtime_ns: int  # change_stamp(): the later of mtime and ctime
    problem: str | None = None


def label_of(relpath: str) -> str:
    """The class a path belongs to: its first folder under audio_dir, '' if none."""
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else ""


def label_problem(label: str) -> str | None:
    if USABLE_LABEL.fullmatch(label):
        return None
    return (f"class folder name {shown(label)!r} cannot be a label: use at most 64 letters, digits, "
            "spaces and _ . + ( ) -, starting with a letter or digit; rename the folder")


def index_path(path: Path, audio_dir: Path) -> tuple[str, str | None]:
    """A path's key in the index (text SQLite can store), and a problem if its name is unusable.

    Linux names are bytes; one that is not UTF-8 is indexed under an escaped form and
    never read, so it cannot be mistaken for another file.
    """
    relpath = path.relative_to(audio_dir).as_posix()
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        escaped = os.fsencode(relpath).decode("utf-8", "backslashreplace")
        return escaped, "the file or folder name is not valid UTF-8; rename it"
    return relpath, None


def shown(text: str) -> str:
    """Text for a log line: control characters (a newline in a file name) escaped."""
    if not any(unicodedata.category(c) == "Cc" for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)


MAX_FOLDER_DEPTH = 8  # folders below a class folder that are looked into; deeper ones are ignored


def walk_audio_dir(audio_dir: Path, extensions: tuple[str, ...]) -> Iterator[FoundFile]:
    """Every audio-named entry below audio_dir (util/folder_walk.py); folders more than
    MAX_FOLDER_DEPTH below a class folder are not entered (logged)."""
    too_deep: list[Path] = []

    def unlistable(folder: Path, exc: OSError) -> None:
        if folder == audio_dir or exc.errno in SHORTAGE_ERRNOS:  # a partial walk would look like deletions
            raise exc
        logger.warning("cannot list folder %s: %s", shown(os.fsdecode(folder)), exc.strerror or exc)

    for entry in walk_files(audio_dir, lambda name: is_audio_name(name, extensions), MAX_FOLDER_DEPTH + 1,
                            unlistable, too_deep.append):
        path = Path(entry.path)
        relpath, name_problem = index_path(path, audio_dir)
        found = describe_entry(path, relpath, name_problem)
        if found is not None:
            yield found
    _report_too_deep(too_deep, audio_dir)


_reported_too_deep: set[str] = set()


def _report_too_deep(folders: list[Path], audio_dir: Path) -> None:
    """One warning per newly seen too-deep folder, not one per rescan."""
    fresh = [f for f in folders if str(f) not in _reported_too_deep]
    if fresh:
        if len(_reported_too_deep) > 10_000:
            _reported_too_deep.clear()
        _reported_too_deep.update(str(f) for f in fresh)
        logger.warning("ignored %d folder(s) more than %d levels below a class folder, e.g. %s",
                       len(fresh), MAX_FOLDER_DEPTH, shown(fresh[0].relative_to(audio_dir).as_posix()[:200]))


def describe_entry(path: Path, relpath: str, name_problem: str | None = None) -> FoundFile | None:
    """lstat one entry; None when it vanished meanwhile."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return FoundFile(relpath, label_of(relpath), 0, 0, f"cannot stat file ({exc.strerror})")
    label = label_of(relpath)
    problem = name_problem or _entry_problem(info.st_mode, label)
    return FoundFile(relpath, label, info.st_size, change_stamp(info), problem)


def change_stamp(info: os.stat_result) -> int:
    """When the file last changed, as far as we can tell: the later of its mtime and ctime.

    `cp -p`, `rsync -t` and `touch -r` give other bytes the old mtime, but nobody can set
    ctime: a file replaced by others of the same size is noticed all the same. (A rename or
    chmod also moves ctime: the file is read and hashed again, and its cached embedding kept.)
    """
    return max(info.st_mtime_ns, info.st_ctime_ns)


def _entry_problem(mode: int, label: str) -> str | None:
    if stat.S_ISLNK(mode):
        return "symbolic link (not followed)"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not label:
        return NO_CLASS_REASON
    return label_problem(label)
