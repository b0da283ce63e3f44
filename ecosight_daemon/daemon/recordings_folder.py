"""recordings_dir as the daemon sees it: walked a bounded number of files per scan, a file
taken once it has settled (util/settling.py, the rule audio_dir follows too) and, when it
may still be arriving, once it has waited incomplete_settle_s; a recording is forgotten
only when a whole walk missed it and lstat says it is gone."""

from __future__ import annotations

import itertools
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

from ecosight_daemon.audio import READABLE_EXTENSIONS, is_audio_name
from ecosight_daemon.detection.wav_header import is_wav, wav_data_missing
from ecosight_daemon.store.recordings import RecordingLedger
from ecosight_daemon.util.folder_walk import walk_files
from ecosight_daemon.util.printable import printable
from ecosight_daemon.util.settling import Settling

logger = logging.getLogger(__name__)
MAX_SCAN_FILES = 10_000  # files looked at per scan; a larger tree is walked across several
MAX_SCAN_DEPTH = 8


class RecordingsFolder:
    def __init__(self, root: Path, ledger: RecordingLedger, settle_s: float, incomplete_settle_s: float) -> None:
        self.root = root
        self._ledger = ledger
        self._incomplete_settle_s = incomplete_settle_s
        self._settling: Settling[str] = Settling(settle_s)
        self._walker: Iterator[tuple[str, int, int]] | None = None
        self._seen: set[str] = set()  # what the walk under way has seen so far

    @property
    def settling(self) -> int:
        return len(self._settling)

    def scan(self, now: float) -> set[str]:
        """Up to MAX_SCAN_FILES files; the recordings noted (new or changed) for analysis."""
        known = self._ledger.all()
        if self._walker is None:
            self._walker, self._seen = self._files(), set()
        batch = list(itertools.islice(self._walker, MAX_SCAN_FILES))
        noted: set[str] = set()
        for relpath, size, mtime_ns in batch:
            self._seen.add(relpath)
            row = known.get(relpath)
            if row is not None and (row.size, row.mtime_ns) == (size, mtime_ns):
                self._settling.forget(relpath)
                continue
            if self._settling.observe(relpath, size, mtime_ns, now):
                if self._maybe_still_copied(relpath, self._settling.unchanged_for(relpath, now)):
                    continue
                self._settling.forget(relpath)
                logger.info("recording %s: %s (%.1f MB)", printable(relpath),
                            "changed, analysed again" if row else "new", size / 1e6)
                self._ledger.note(relpath, size, mtime_ns)
                noted.add(relpath)
        if len(batch) == MAX_SCAN_FILES:
            return noted  # the walk goes on at the next scan
        seen, self._walker = self._seen, None
        if self.root.is_dir():
            for relpath in set(known) - seen:
                if self._gone(relpath):
                    logger.info("recording %s: gone; its events are forgotten", printable(relpath))
                    self._ledger.forget(relpath)
        for relpath in set(self._settling) - seen:
            self._settling.forget(relpath)
        return noted

    def _maybe_still_copied(self, relpath: str, unchanged_s: float) -> bool:
        """Unchanged for less than incomplete_settle_s, and either a WAV with less data than its
        header says or a format whose header does not tell (FLAC, OGG: they always wait)."""
        if unchanged_s >= self._incomplete_settle_s:
            return False
        path = self.root / relpath
        return wav_data_missing(path) or not is_wav(path)

    def _gone(self, relpath: str) -> bool:
        """Only what lstat says is not there (or is no longer a file) is forgotten."""
        try:
            return not stat.S_ISREG((self.root / relpath).lstat().st_mode)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # a mount that does not answer now: nothing is forgotten for it

    def _files(self) -> Iterator[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of every regular file with a recording's name; lstat only."""
        prefix = len(str(self.root)) + 1
        for entry in walk_files(self.root, lambda name: is_audio_name(name, READABLE_EXTENSIONS), MAX_SCAN_DEPTH):
            try:
                if entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    yield entry.path[prefix:], info.st_size, info.st_mtime_ns
            except OSError:
                continue
