"""Durable file writes: every file is replaced by write-temp, fsync, os.replace, fsync-dir, so a
power cut leaves either the old file or the new one, never half of one; a damaged file is set
aside for a person, never overwritten."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp.*")


def free_space(folder: Path) -> str:
    """Free space on folder's disk, for error messages ("unknown space" when it cannot be read)."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown space"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write via `write(tmp)` next to target, then rename over it (durable on return)."""
    # Unique per writer: two processes (a daemon and a CLI) never write the same temp file.
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(target.parent)


def fsync_tree(folder: Path) -> None:
    """Make every file and folder below `folder` durable (before it is renamed into place)."""
    stack = [folder]
    while stack:
        current = stack.pop()
        for entry in os.scandir(current):
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                fsync_path(Path(entry.path))
        fsync_path(current)


def set_aside(path: Path, why: str) -> Path:
    """Move a damaged file out of the way, keeping it for a person to look at."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    logger.error("%s is damaged (%s); moved it to %s", path, why, aside.name)
    return aside


def read_json_or_set_aside(path: Path) -> Any:
    """JSON from path; a file that is not valid JSON (a power cut, a bad edit) is set aside."""
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        set_aside(path, f"not valid JSON: {exc}")
        return None


def write_json(target: Path, value: Any) -> None:
    text = json.dumps(value, indent=2) + "\n"
    replace_atomically(target, lambda tmp: _ignore(tmp.write_text(text)))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def copy_atomically(source: Path, target: Path) -> None:
    replace_atomically(target, lambda tmp: _ignore(shutil.copyfile(source, tmp)))


def _ignore(_: object) -> None:
    """For a lambda whose call's return value is not wanted."""
