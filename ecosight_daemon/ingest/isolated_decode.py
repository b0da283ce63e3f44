"""Decoding in a child process that can be stopped: a file can cost at most `max_decode_s`
of wall-clock time, whatever it does to the decoder.

libsndfile can loop forever inside `sf_open` on a few kilobytes whose chunk sizes lie; a
thread stuck there can neither be interrupted nor killed, and it held its worker (and the
daemon's SIGTERM) for good. Here the decoder runs in a long-lived child (decode_child.py,
spoken to through util/child_channel.py); a decode past its budget kills the child and the
file fails with that reason, and the next file starts a new child. A child that dies (a
crash, an OOM kill) is reported as `DecoderInterrupted`: the caller tries the file again a
bounded number of times.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ecosight_daemon.audio import DecodedAudio
from ecosight_daemon.errors import AudioDecodeError
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.util.child_channel import ChildChannel

logger = logging.getLogger(__name__)


class DecoderInterrupted(Exception):
    """The decoder process died while decoding (not the file's fault, or not provably)."""


class IsolatedDecoder:
    """One decoder process, used by one thread at a time; started on first use."""

    def __init__(self, limits: IngestLimits) -> None:
        self._limits = limits
        self._channel = ChildChannel("ecosight_daemon.ingest.decode_child")

    def decode(self, data: bytes) -> DecodedAudio:
        """The file's 16 kHz mono audio. AudioDecodeError says why not (the budget
        exceeded included); DecoderInterrupted when the child died meanwhile."""
        limits = self._limits
        request = {"max_duration_s": limits.max_duration_s, "min_duration_s": limits.min_duration_s,
                   "min_peak_dbfs": limits.min_peak_dbfs}
        try:
            header, payload = self._channel.request(request, limits.max_decode_s, data)
        except TimeoutError:
            self._channel.stop()
            raise AudioDecodeError(
                f"decoding took longer than max_decode_s ({limits.max_decode_s:g} s) and was stopped; "
                "the file may be damaged (re-export it) or the machine overloaded (raise [audio] max_decode_s)"
            ) from None
        except EOFError:
            raise DecoderInterrupted(f"the decoder process {self._channel.ended_how()}") from None
        if "error" in header:
            raise AudioDecodeError(str(header["error"]))
        return DecodedAudio(np.frombuffer(payload, dtype=np.float32), int(header["rate"]), int(header["channels"]))

    def stop_if_idle(self, idle_s: float) -> None:
        """Stop the child when it has not decoded for `idle_s` (35 MB each, started again in
        ~0.1 s when needed); from the thread that decodes, or while none does."""
        if self._channel.pid is not None and time.monotonic() - self._channel.last_used > idle_s:
            self._channel.stop()

    def interrupt(self) -> None:
        """From another thread (shutting down): kill the child; a decode under way ends
        at once with DecoderInterrupted."""
        self._channel.kill()

    def close(self) -> None:
        """Stop the child; from the thread that decodes, or once it no longer does."""
        self._channel.stop()

    @property
    def pid(self) -> int | None:
        """The decoder process's, while one runs."""
        return self._channel.pid

    @property
    def started(self) -> int:
        """Decoder processes started, for the tests."""
        return self._channel.started

    def start(self) -> None:
        """Start the decoder process now rather than with the first file."""
        try:
            self._channel.running()
        except EOFError as exc:
            raise DecoderInterrupted(str(exc)) from None
