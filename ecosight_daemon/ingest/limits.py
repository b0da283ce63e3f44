"""What a file may cost before it is refused: extensions, size, duration, loudness (from
[audio] in config.toml), for the daemon, the CLI and /predict alike."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ecosight_daemon.config import Settings


@dataclass(frozen=True)
class IngestLimits:
    extensions: tuple[str, ...]
    max_duration_s: float
    max_file_bytes: int
    min_duration_s: float = 0.0
    min_peak_dbfs: float | None = None
    max_decode_s: float = 60.0  # wall-clock, where decoding runs in a process that can be stopped

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        audio = settings.audio
        return cls(audio.extensions, audio.max_duration_s, int(audio.max_file_mb * 1_000_000),
                   audio.min_duration_s, audio.min_peak_dbfs, audio.max_decode_s)


def size_problem(size: int, max_file_bytes: int) -> str | None:
    if size > max_file_bytes:
        return f"larger than max_file_mb ({max_file_bytes / 1e6:g} MB): {size / 1e6:.1f} MB"
    return None


# The machine, not the file: out of descriptors or memory. Such a read is tried again
# later; it never makes the file `failed`.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def shortage(exc: BaseException) -> str | None:
    """What the machine ran short of, when that (not the file) made the read fail."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.errno in SHORTAGE_ERRNOS:
        return exc.strerror or errno.errorcode.get(exc.errno or 0, "out of resources")
    return None
