"""The one folder walk (audio_dir, recordings_dir, `detect`'s folders): the wanted names
below a root, a folder's files (by name) before its sub-folders (by name, depth first);
hidden and temporary names skipped, symbolic links to folders never entered. An explicit
stack, not recursion: a tree thousands of folders deep costs memory for its width, not the
interpreter's stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ecosight_daemon.audio import is_ignored_name


def _skip(folder: Path, error: OSError) -> None:
    pass


def walk_files(root: Path, wanted: Callable[[str], bool], max_depth: int,
               unlistable: Callable[[Path, OSError], None] = _skip,
               too_deep: Callable[[Path], None] | None = None) -> Iterator[os.DirEntry[str]]:
    """Entries (not folders) with a wanted name, at most max_depth folders below root.
    A folder that cannot be listed goes to `unlistable` (it may raise to stop the walk);
    one deeper than max_depth to `too_deep`."""
    stack: list[tuple[str, int]] = [(str(root), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name, reverse=True)
        except OSError as exc:
            unlistable(Path(folder), exc)
            continue
        files = []
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_folder:
                if depth < max_depth:
                    stack.append((entry.path, depth + 1))
                elif too_deep is not None:
                    too_deep(Path(entry.path))
            elif wanted(entry.name):
                files.append(entry)
        yield from reversed(files)
