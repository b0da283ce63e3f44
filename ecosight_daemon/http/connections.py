"""Limits on HTTP connections uvicorn does not set: how many may be open at once, and how
long one may take to send a request's head (the request line and headers).

Uvicorn closes a connection idle *after* a response (timeout_keep_alive) but keeps one
that never finishes its first head forever: 1,100 silent TCP connections took every
descriptor the daemon had, and a client sending a header byte a minute holds its
connection for good. Here such a connection is closed after `[http] request_timeout_s`, and
past `[http] max_connections` the connection that has waited longest for a request head
is closed to make room (one log line a minute says so).
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 60.0


class ConnectionLimits:
    """The limits and counts one server's connections share."""

    def __init__(self, max_connections: int, head_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.head_timeout_s = head_timeout_s
        self.closed_for_room = 0  # waiting for a request head when the server was full
        self.refused = 0  # new ones, when every open connection had a request under way
        self.timed_out = 0  # no whole request head in time
        self._logged_at = -LOG_INTERVAL_S
        self._unlogged = 0

    def note_full(self, open_now: int) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            logger.warning("HTTP connections at the limit (%d open, [http] max_connections); %d closed or refused "
                           "since the last line (logged at most once a minute)", open_now, self._unlogged)
            self._logged_at, self._unlogged = now, 0


def limited_protocol(max_connections: int, head_timeout_s: float) -> type[LimitedH11Protocol]:
    """uvicorn's h11 protocol with these limits, for one server."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"limits": ConnectionLimits(max_connections, head_timeout_s)})


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a cap on connections and a deadline on each request head."""

    limits: ConnectionLimits
    _head_timer: asyncio.TimerHandle | None = None
    _waiting_since = 0.0  # when it last started waiting for a request head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head has its own deadline

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request head: an idle client
        gives way to a new one; with none waiting, the new one is closed."""
        limits = self.limits
        limits.note_full(len(self.connections) - 1)
        waiting = [c for c in self.connections if isinstance(c, LimitedH11Protocol) and c._waiting_for_head()]
        oldest = min(waiting, key=lambda c: c._waiting_since)
        if oldest is self and len(waiting) == 1:
            limits.refused += 1
        else:
            limits.closed_for_room += 1
        oldest.transport.close()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._waiting_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_deadline_passed)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        # IDLE: no whole request head yet. Past it the request's own deadlines apply (the
        # body's in bodies.py); an answer may take as long as it needs.
        if self._waiting_for_head():
            self.limits.timed_out += 1
            logger.debug("closed an HTTP connection from %s: no whole request in %.0f s", self.client,
                         self.limits.head_timeout_s)
            self.transport.close()
