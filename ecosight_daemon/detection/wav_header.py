"""What a WAV's RIFF header claims, read in plain Python from its first 64 KB (never
through libsndfile): how long its data chunk says it is, and whether the file holds less
(a copy under way, or a recorder that lost power)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

HEAD_BYTES = 1 << 16


def _head(path: Path) -> tuple[bytes, int] | None:
    """The first HEAD_BYTES and the file's size; None unless it is a regular file (opened
    without blocking, so a FIFO or a device never holds the caller)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        return os.read(fd, HEAD_BYTES), info.st_size
    except OSError:
        return None
    finally:
        os.close(fd)


def _data_chunk(head: bytes) -> tuple[int, int, int] | None:
    """(offset of the data, bytes it claims, bits per sample) of a RIFF/WAVE head."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at, bits = 12, 0
    while at + 8 <= len(head):
        kind, size = head[at:at + 4], struct.unpack("<I", head[at + 4:at + 8])[0]
        if kind == b"fmt " and at + 24 <= len(head):
            bits = struct.unpack("<H", head[at + 22:at + 24])[0]
        if kind == b"data":
            return at + 8, size, bits
        at += 8 + size + (size & 1)
    return None


def declared_wav_seconds(path: Path, frames: int, rate: int, channels: int) -> float | None:
    """A WAV's data-chunk length in seconds when it claims more frames than the file holds."""
    found = _head(path)
    chunk = None if found is None else _data_chunk(found[0])
    if chunk is None:
        return None
    _, size, bits = chunk
    if bits <= 0 or size == 0xFFFFFFFF or channels <= 0 or rate <= 0:  # a streaming writer's placeholder
        return None
    declared = size // (channels * ((bits + 7) // 8))
    return declared / rate if declared > frames + 1 else None


def wav_data_missing(path: Path) -> bool:
    """True for a WAV whose data chunk claims more bytes than the file holds."""
    found = _head(path)
    chunk = None if found is None else _data_chunk(found[0])
    if found is None or chunk is None:
        return False
    offset, size, _ = chunk
    return size != 0xFFFFFFFF and offset + size > found[1]


def is_wav(path: Path) -> bool:
    found = _head(path)
    return found is not None and found[0][:4] == b"RIFF" and found[0][8:12] == b"WAVE"
