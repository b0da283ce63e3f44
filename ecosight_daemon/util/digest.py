"""sha256 digests of files, of several files together, and of bytes already read (one home
for them: files are read in 1 MiB blocks, never whole)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

BLOCK = 1 << 20


def _update_from_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    _update_from_file(digest, path)
    return digest.hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    """For bytes already in memory: the audio decoded and the hash recorded come from one read."""
    return hashlib.sha256(data).hexdigest()


def sha256_of_files(root: Path, paths: Iterable[Path]) -> str:
    """One digest over several files, each preceded by its path relative to `root` (missing ones skipped)."""
    digest = hashlib.sha256()
    for path in paths:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            _update_from_file(digest, path)
    return digest.hexdigest()
