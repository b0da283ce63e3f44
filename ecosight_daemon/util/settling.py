"""The settled-file rule, for both watched folders (audio_dir's class folders and
recordings_dir): a file is taken once its size and mtime have held still for settle_s, or
at first sight when its mtime is already settle_s old (a file moved in from elsewhere:
every write moves the mtime to the present)."""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class Settling(Generic[Key]):
    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: dict[Key, tuple[int, int, float]] = {}  # size, mtime_ns, unchanged since (monotonic)

    def __len__(self) -> int:
        return len(self._seen)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._seen))

    def observe(self, key: Key, size: int, mtime_ns: int, now: float) -> bool:
        """Note what the file looks like now; True when it has settled (it stays noted until forgotten)."""
        previous = self._seen.get(key)
        if previous is None or previous[:2] != (size, mtime_ns):
            self._seen[key] = (size, mtime_ns, now)
            return previous is None and time.time() - mtime_ns / 1e9 >= self.settle_s
        return now - previous[2] >= self.settle_s

    def unchanged_for(self, key: Key, now: float) -> float:
        previous = self._seen.get(key)
        return 0.0 if previous is None else now - previous[2]

    def forget(self, key: Key) -> None:
        self._seen.pop(key, None)
