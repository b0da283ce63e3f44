"""Decoding in a child process that can be stopped: a file can cost at most `max_decode_s`
of wall-clock time, whatever it does to the decoder.

libsndfile can loop forever inside `sf_open` on a few kilobytes whose chunk sizes lie; a
thread stuck there can neither be interrupted nor killed, and it held its worker (and the
daemon's SIGTERM) for good. Here the decoder runs in a long-lived child (decode_child.py);
a decode past its budget kills the child and the file fails with that reason, and the next
file starts a new child. A child that dies (a crash, an OOM kill) is reported as
`DecoderInterrupted`: the caller tries the file again a bounded number of times.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from ecosight_daemon.audio import DecodedAudio
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.ingest.decode_child import READY
from ecosight_daemon.ingest.limits import IngestLimits

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
START_TIMEOUT_S = 120.0  # Python and the decoder's imports; slow only on a machine under heavy load
# The child decodes one file at a time on one core: BLAS thread pools would only cost memory.
CHILD_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class DecoderInterrupted(Exception):
    """The decoder process died while decoding (not the file's fault, or not provably)."""


class IsolatedDecoder:
    """One decoder process, used by one thread at a time; started on first use."""

    def __init__(self, limits: IngestLimits) -> None:
        self._limits = limits
        self._child: subprocess.Popen[bytes] | None = None
        self._last_used = 0.0
        self.started = 0  # decoder processes started, for the tests

    def decode(self, data: bytes) -> DecodedAudio:
        """The file's 16 kHz mono audio. AudioDecodeError says why not (the budget
        exceeded included); DecoderInterrupted when the child died meanwhile."""
        limits = self._limits
        request = {"bytes": len(data), "max_duration_s": limits.max_duration_s,
                   "min_duration_s": limits.min_duration_s, "min_peak_dbfs": limits.min_peak_dbfs}
        child = self._running_child()
        self._last_used = time.monotonic()
        deadline = time.monotonic() + limits.max_decode_s
        try:
            header, payload = self._exchange(child, json.dumps(request).encode() + b"\n" + data, deadline)
        except TimeoutError:
            self._stop_child()
            raise AudioDecodeError(
                f"decoding took longer than max_decode_s ({limits.max_decode_s:g} s) and was stopped; "
                "the file may be damaged (re-export it) or the machine overloaded (raise [audio] max_decode_s)"
            ) from None
        except (BrokenPipeError, EOFError):
            raise DecoderInterrupted(f"the decoder process {self._ended_child()}") from None
        if "error" in header:
            raise AudioDecodeError(str(header["error"]))
        return DecodedAudio(np.frombuffer(payload, dtype=np.float32), int(header["rate"]), int(header["channels"]))

    def stop_if_idle(self, idle_s: float) -> None:
        """Stop the child when it has not decoded for `idle_s` (35 MB each, started again in
        ~0.1 s when needed); from the thread that decodes, or while none does."""
        if self._child is not None and time.monotonic() - self._last_used > idle_s:
            self._stop_child()

    def interrupt(self) -> None:
        """From another thread (shutting down): kill the child; a decode under way ends
        at once with DecoderInterrupted."""
        child = self._child
        if child is not None:
            child.kill()

    def close(self) -> None:
        """Stop the child; from the thread that decodes, or once it no longer does."""
        self._stop_child()

    @property
    def pid(self) -> int | None:
        """The decoder process's, while one runs."""
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        """Start the decoder process now rather than with the first file."""
        self._running_child()

    def _running_child(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self._stop_child()
        self.started += 1
        child = self._child = subprocess.Popen(
            [sys.executable, "-m", "ecosight_daemon.ingest.decode_child", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **CHILD_ENVIRONMENT},
        )
        assert child.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=START_TIMEOUT_S) and os.read(child.stdout.fileno(), len(READY))
        if ready != READY:
            self._stop_child()
            raise DecoderInterrupted(f"the decoder process did not start within {START_TIMEOUT_S:g} s")
        return child

    def _exchange(self, child: subprocess.Popen[bytes], request: bytes,
                  deadline: float) -> tuple[dict[str, Any], bytes]:
        """Write the request and read the whole answer by `deadline` (TimeoutError otherwise)."""
        assert child.stdin is not None and child.stdout is not None
        to_send = memoryview(request)
        received = bytearray()
        header: dict[str, Any] | None = None
        needed = -1  # bytes of the answer: known once its header line is in
        with selectors.DefaultSelector() as selector:
            os.set_blocking(child.stdin.fileno(), False)
            selector.register(child.stdin, selectors.EVENT_WRITE)
            selector.register(child.stdout, selectors.EVENT_READ)
            while header is None or len(received) < needed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for key, _ in selector.select(timeout=left):
                    if key.fileobj is child.stdin:
                        sent = os.write(child.stdin.fileno(), to_send[:CHUNK])
                        to_send = to_send[sent:]
                        if not to_send:
                            selector.unregister(child.stdin)
                        continue
                    piece = os.read(child.stdout.fileno(), CHUNK)
                    if not piece:
                        raise EOFError
                    received += piece
                    if header is None and b"\n" in received:
                        line, _, rest = bytes(received).partition(b"\n")
                        header = json.loads(line)
                        received = bytearray(rest)
                        needed = 4 * int(header.get("samples", 0))
        return header, bytes(received)

    def _ended_child(self) -> str:
        """How the child ended ("was killed by SIGKILL"), once it has."""
        assert self._child is not None
        try:
            code = self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._stop_child()
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
