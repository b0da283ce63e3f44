"""Uvicorn on a thread of its own, on a socket bound before the daemon is ready (so a
taken port stops the start with a clear message instead of a silent dead thread)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from ecosight_daemon.errors import ConfigError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); another program may use "
                          "the port: set [http] port, or enabled = false") from exc
    sock.listen(64)
    sock.set_inheritable(False)
    return sock


class AcceptErrorsOncePerMinute(logging.Filter):
    """asyncio logs "socket.accept() out of system resource" with a traceback at every
    failed accept while descriptors are exhausted (thousands a second, a 419 MB log in
    3 minutes): let one through a minute, without the traceback."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last = -interval_s
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self.suppressed += 1
            return False
        self._last = now
        error = record.exc_info[1] if record.exc_info else None
        record.msg = ("cannot accept HTTP connections (%s); %d such errors since the last line; "
                      "this is logged at most once a minute")
        record.args = (error, self.suppressed)
        record.exc_info, record.exc_text, self.suppressed = None, None, 0
        return True


class HttpServer:
    def __init__(self, app: FastAPI, sock: socket.socket, protocol: type[asyncio.Protocol]) -> None:
        self._app = app
        self._socket = sock
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, http=protocol, timeout_keep_alive=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="ecosight-http", daemon=True)
        self._accept_errors = AcceptErrorsOncePerMinute()

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        logging.getLogger("asyncio").addFilter(self._accept_errors)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise ConfigError(f"the HTTP server did not start on {self.address}; see the log above")
        logger.info("HTTP API and dashboard on http://%s/", self.address)

    def stop(self) -> None:
        self._app.state.stopping = True
        self._server.should_exit = True
        self._thread.join(timeout=STOP_TIMEOUT_S)
        self._socket.close()
        logging.getLogger("asyncio").removeFilter(self._accept_errors)

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException:  # SystemExit from uvicorn included: logged, and start() reports it
            logger.exception("the HTTP server stopped")
