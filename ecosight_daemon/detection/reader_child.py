"""The recording reader's process: every byte of a long recording is read here, never in
the daemon, so a file that makes libsndfile loop forever costs a killed child and a
reason, not a stuck loop. Run as `python -m ecosight_daemon.detection.reader_child <pid>`;
recording_reader.py is the parent's side, util/child_channel.py the framing.

Requests ({"op": ...} and its fields; an answer is {"error": reason} or as below):
- probe {path}: the header (rate, channels, frames, declared_s) and the clock evidence
- hash {path, offset}: hashes the next HASH_STEP_BYTES; {"offset", "sha256" once done}
- read {path, start_frame, frames}: those frames down-mixed to mono float32 at the file's rate;
  a mono 16-bit file's as they are ({"dtype": "int16"}: half the bytes through the pipe)
- cut {path, centre_s, seconds}: that stretch as 16 kHz mono float32
Memory stays that of BLOCK_BYTES of samples, whatever the file's rate and channel count.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from ecosight_daemon.audio import TARGET_SAMPLE_RATE
from ecosight_daemon.detection.clock import read_clock_evidence
from ecosight_daemon.detection.stream import BLOCK_BYTES
from ecosight_daemon.detection.wav_header import declared_wav_seconds
from ecosight_daemon.util import pause
from ecosight_daemon.util.child_channel import Answer, die_with_parent, serve

HASH_STEP_BYTES = 32 << 20


class NotReadable(Exception):
    """A reason for the operator."""


def regular_file(path: str) -> None:
    """NotReadable unless `path` is a regular file; opened without blocking, so a FIFO or a
    device never holds the reader."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise NotReadable(f"cannot open it ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotReadable("not a regular file (a FIFO, device or socket); only audio files are read")
    finally:
        os.close(fd)


class Reader:
    def __init__(self) -> None:
        self._open: tuple[str, soundfile.SoundFile] | None = None
        self._hashing: tuple[str, int, Any] | None = None

    def handle(self, request: dict[str, Any], _payload: bytes) -> Answer:
        pause.point("reading_recording")
        try:
            op = request["op"]
            if op == "probe":
                return self.probe(request["path"]), b""
            if op == "hash":
                return self.hash(request["path"], int(request["offset"])), b""
            if op == "read":
                return self.read(request["path"], int(request["start_frame"]), int(request["frames"]))
            if op == "cut":
                return self.cut(request["path"], float(request["centre_s"]), float(request["seconds"]))
            return {"error": f"unknown request {op!r}"}, b""
        except NotReadable as exc:
            return {"error": str(exc)}, b""
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, MemoryError) as exc:
            self._close()
            detail = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
            return {"error": f"not a readable WAV/FLAC/OGG file ({detail})"}, b""

    def probe(self, path: str) -> dict[str, Any]:
        regular_file(path)
        self._close()
        info = soundfile.info(path)
        rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
        return {"rate": rate, "channels": channels, "frames": frames,
                "declared_s": declared_wav_seconds(Path(path), frames, rate, channels),
                "clock": read_clock_evidence(Path(path)).as_json()}

    def hash(self, path: str, offset: int) -> dict[str, Any]:
        if offset == 0 or self._hashing is None or self._hashing[:2] != (path, offset):
            if offset != 0:
                return {"restart": True}
            regular_file(path)
            self._hashing = (path, 0, hashlib.sha256())
        _, at, digest = self._hashing
        with open(path, "rb") as handle:
            handle.seek(at)
            block = handle.read(HASH_STEP_BYTES)
        digest.update(block)
        if len(block) < HASH_STEP_BYTES:
            self._hashing = None
            return {"offset": at + len(block), "sha256": digest.hexdigest()}
        self._hashing = (path, at + len(block), digest)
        return {"offset": at + len(block)}

    def read(self, path: str, start_frame: int, frames: int, as_int16: bool = True) -> Answer:
        sound = self._sound(path)
        if sound.tell() != start_frame:
            sound.seek(min(start_frame, sound.frames))
        if as_int16 and sound.channels == 1 and sound.subtype == "PCM_16":
            samples = sound.read(frames, dtype="int16")
            return {"frames": len(samples), "dtype": "int16"}, samples.tobytes()
        parts, got = [], 0
        step = max(1, BLOCK_BYTES // (4 * sound.channels))
        while got < frames:
            block = sound.read(min(step, frames - got), dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            got += len(block)
            parts.append(mono(block))
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return {"frames": got}, samples.tobytes()

    def cut(self, path: str, centre_s: float, seconds: float) -> Answer:
        import soxr

        sound = self._sound(path)
        rate = sound.samplerate
        start = max(0, int((centre_s - seconds / 2) * rate))
        _, data = self.read(path, min(start, sound.frames), int(seconds * rate), as_int16=False)
        samples = np.frombuffer(data, np.float32)
        if rate != TARGET_SAMPLE_RATE and len(samples):
            samples = soxr.resample(samples, rate, TARGET_SAMPLE_RATE).astype(np.float32)
        return {"rate": TARGET_SAMPLE_RATE}, samples.tobytes()

    def _sound(self, path: str) -> soundfile.SoundFile:
        if self._open is None or self._open[0] != path:
            self._close()
            regular_file(path)
            self._open = (path, soundfile.SoundFile(path))
        return self._open[1]

    def _close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def mono(block: np.ndarray) -> np.ndarray:
    if not np.isfinite(block).all():
        block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    down_mixed: np.ndarray = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy()
    return down_mixed


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    serve(Reader().handle, sys.stdin.buffer, sys.stdout.buffer)
