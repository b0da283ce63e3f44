"""A long-lived helper process spoken to one request at a time, every answer due by a
deadline: the way the daemon reads files that can hang or crash whatever reads them.

A request is one JSON line and then `payload` bytes (the line says how many); an answer is
one JSON line and then the bytes its "bytes" field names. A thread stuck in C cannot be
interrupted, but a process can be killed: past its deadline the caller kills the child
(TimeoutError), and a child that dies is an EOFError; the next request starts a new one.
`serve` is the child's side.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK = 1 << 20
READY = b"ready\n"
START_TIMEOUT_S = 120.0  # Python and the child's imports; slow only on a machine under heavy load
# Each child works on one file at a time on one core: BLAS thread pools would only cost memory.
CHILD_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
F_SETPIPE_SZ = 1031  # from <linux/fcntl.h>
PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size

Answer = tuple[dict[str, Any], bytes]
Received = tuple[dict[str, Any], bytearray]  # the answer's bytes as they came in, not copied again


class Exchange:
    """One request under way: `advance` moves it on for at most `timeout` seconds."""

    def __init__(self, child: subprocess.Popen[bytes], request: bytes, deadline: float) -> None:
        assert child.stdin is not None and child.stdout is not None
        self._child = child
        self._to_send = memoryview(request)
        self._line = bytearray()  # the answer's JSON line, until its newline is in
        self._header: dict[str, Any] | None = None
        self._body = bytearray()  # made its full size once the line says how many bytes follow
        self._filled = 0
        self.deadline = deadline
        self._selector = selectors.DefaultSelector()
        os.set_blocking(child.stdin.fileno(), False)
        self._selector.register(child.stdin, selectors.EVENT_WRITE)
        self._selector.register(child.stdout, selectors.EVENT_READ)

    def advance(self, timeout: float) -> bool:
        """True once the whole answer is in. TimeoutError past the deadline, EOFError when the child ended."""
        until = min(self.deadline, time.monotonic() + timeout)
        while not self.done:
            left = until - time.monotonic()
            if left <= 0:
                if time.monotonic() >= self.deadline:
                    self._selector.close()
                    raise TimeoutError
                return False
            for key, _ in self._selector.select(timeout=left):
                if key.fileobj is self._child.stdin:
                    self._send()
                else:
                    self._receive()
        self._selector.close()
        return True

    @property
    def done(self) -> bool:
        return self._header is not None and self._filled >= len(self._body)

    @property
    def answer(self) -> Received:
        assert self._header is not None
        return self._header, self._body

    def _send(self) -> None:
        assert self._child.stdin is not None
        try:
            sent = os.write(self._child.stdin.fileno(), self._to_send[:CHUNK])
        except BrokenPipeError:
            self._selector.close()
            raise EOFError from None
        self._to_send = self._to_send[sent:]
        if not self._to_send:
            self._selector.unregister(self._child.stdin)

    def _receive(self) -> None:
        assert self._child.stdout is not None
        fd = self._child.stdout.fileno()
        if self._header is not None:  # straight into its place: an 8 MiB block is copied once, not three times
            got = os.readv(fd, [memoryview(self._body)[self._filled:self._filled + CHUNK]])
            if not got:
                self._selector.close()
                raise EOFError
            self._filled += got
            return
        piece = os.read(fd, CHUNK)
        if not piece:
            self._selector.close()
            raise EOFError
        self._line += piece
        if b"\n" in self._line:
            line, _, rest = bytes(self._line).partition(b"\n")
            self._header = json.loads(line)
            self._body = bytearray(int(self._header.get("bytes", 0)))
            self._body[:len(rest)] = rest
            self._filled = len(rest)


class ChildChannel:
    """One helper process (`python -m <module> <parent pid>`), used by one thread at a time;
    started on first use, and again after it was killed or died."""

    def __init__(self, module: str) -> None:
        self._module = module
        self._child: subprocess.Popen[bytes] | None = None
        self.last_used = 0.0
        self.started = 0  # processes started, for the tests

    def begin(self, header: dict[str, Any], budget_s: float, payload: bytes = b"") -> Exchange:
        """Send a request; its answer is due within `budget_s` of now."""
        child = self.running()
        self.last_used = time.monotonic()
        line = json.dumps({**header, "bytes": len(payload)}).encode() + b"\n"
        return Exchange(child, line + payload, time.monotonic() + budget_s)

    def request(self, header: dict[str, Any], budget_s: float, payload: bytes = b"") -> Received:
        """Send a request and wait for its answer (TimeoutError, EOFError as `Exchange.advance`)."""
        exchange = self.begin(header, budget_s, payload)
        while not exchange.advance(exchange.deadline - time.monotonic() + 0.01):
            pass
        return exchange.answer

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def running(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self.stop()
        self.started += 1
        child = self._child = subprocess.Popen(
            [sys.executable, "-m", self._module, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **CHILD_ENVIRONMENT},
        )
        assert child.stdout is not None
        widen_pipe(child.stdout.fileno())
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=START_TIMEOUT_S) and os.read(child.stdout.fileno(), len(READY))
        if ready != READY:
            self.stop()
            raise EOFError(f"the helper process did not start within {START_TIMEOUT_S:g} s")
        return child

    def kill(self) -> None:
        """From any thread: kill the child; a request under way ends with EOFError."""
        child = self._child
        if child is not None:
            child.kill()

    def ended_how(self) -> str:
        """How the child ended ("was killed by SIGKILL"), once it has; it is then cleared away."""
        if self._child is None:
            return "was stopped"
        try:
            code: int | None = self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def widen_pipe(fd: int) -> None:
    """Let an answer's bytes wait in the pipe PIPE_BYTES at a time, not the 64 KiB Linux gives:
    a block of samples (8 MiB) crossed in 128 turns of both processes, each a wake-up."""
    if sys.platform.startswith("linux"):
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default stays
            pass


def serve(handle: Callable[[dict[str, Any], bytes], Answer], requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: read a request, answer it with `handle`, until stdin closes."""
    answers.write(READY)  # imports done: the parent's deadlines are for the work, not for starting Python
    answers.flush()
    while line := requests.readline():
        request = json.loads(line)
        payload = requests.read(int(request.get("bytes", 0)))
        header, body = handle(request, payload)
        answers.write(json.dumps({**header, "bytes": len(body)}).encode() + b"\n")
        answers.write(body)
        answers.flush()


def die_with_parent(parent_pid: int) -> None:
    """Killed with the daemon, even if it is SIGKILLed while this process loops in C."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)
