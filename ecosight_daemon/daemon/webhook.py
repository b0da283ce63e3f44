"""The webhook: gun-shot alerts POSTed as JSON to one receiver, on a thread of its own with
a bounded queue, so a slow or dead receiver delays nothing else.

Each attempt has one monotonic deadline for everything (the name's lookup, connect, request,
status line and headers): a receiver that trickles a byte a second is cut off at it, and so is
a resolver that does not answer (the lookup runs on a thread of its own; the attempt stops
waiting for it). The answer's body is
never read and redirects are never followed (a 3xx is reported, not obeyed). With a signing
key, each POST carries `X-EcoSight-Timestamp` and `X-EcoSight-Signature: sha256=<hex>`, the
HMAC-SHA256 of `<timestamp>.<body>`, so the receiver can refuse forged or replayed alerts.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)
WEBHOOK_QUEUE = 1000  # alerts waiting for the webhook; past it the oldest is dropped (and logged)
MAX_BACK_OFF_S = 60.0
UNIT_BLOCKS = ("the systemd unit's IPAddressDeny=any blocks it: allow the receiver with `systemctl edit "
               "ecosight-daemon` and a line `IPAddressAllow={address}` under [Service] (docs/operations.md)")


@dataclass(frozen=True)
class WebhookAnswer:
    delivered: bool
    retry: bool  # worth another attempt (the network, a timeout, a 5xx, 408 or 429)
    why: str


def signature_headers(secret: str | None, body: bytes, now: float) -> dict[str, str]:
    if not secret:
        return {}
    stamp = str(int(now))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-EcoSight-Timestamp": stamp, "X-EcoSight-Signature": f"sha256={digest}"}


def post_once(url: str, body: bytes, headers: dict[str, str], budget_s: float) -> WebhookAnswer:
    """One attempt, all of it within budget_s: past the deadline the socket is shut."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + budget_s
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=budget_s,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=budget_s)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = addresses_within(parts.hostname or "", port, deadline)
    if isinstance(addresses, str):
        return WebhookAnswer(False, True, addresses)
    connection._create_connection = lambda _, __, ___=None: connected(addresses, deadline)  # type: ignore[attr-defined]
    timer = threading.Timer(budget_s, lambda: _shut(connection.sock))  # a TLS handshake too
    timer.daemon = True
    timer.start()
    try:
        connection.connect()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body=body, headers={"Content-Type": "application/json",
                                                               "Connection": "close", **headers})
        answer = connection.getresponse()  # the status line and headers; the body is never read
        status = answer.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        late = time.monotonic() >= deadline
        why = f"no answer within {budget_s:g} s" if late else _network_reason(exc, parts.hostname or "")
        return WebhookAnswer(False, True, why)
    finally:
        timer.cancel()
        connection.close()
    if 200 <= status < 300:
        return WebhookAnswer(True, False, f"answered {status}")
    if 300 <= status < 400:
        where = answer.getheader("Location") or "nowhere"
        return WebhookAnswer(False, False, f"answered {status}, a redirect to {where[:200]!r} that is not followed; "
                                           "set [alerts] webhook_url to the final address")
    return WebhookAnswer(False, status >= 500 or status in (408, 429), f"answered {status}")


def addresses_within(host: str, port: int, deadline: float) -> list[Any] | str:
    """getaddrinfo's answers for host, or why there are none by the deadline. The lookup runs
    on a daemon thread: glibc's resolver can take 5 s per try and server, and nothing stops
    it, so a dead resolver costs the attempt its deadline, not the lookup's own timeouts."""
    answer: list[list[Any] | str] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(f"no address for {host}: {exc}")
        done.set()

    threading.Thread(target=look_up, name="ecosight-webhook-dns", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        return f"no address for {host} within the attempt's deadline (the resolver did not answer)"
    return answer[0]


def connected(addresses: list[Any], deadline: float) -> socket.socket:
    """A socket connected to the first of addresses that accepts before the deadline."""
    failure: OSError = OSError(f"no address to connect to among {len(addresses)}")
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    raise failure


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: unblocks a read in progress
        except OSError:
            pass


def _network_reason(exc: BaseException, host: str) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:
        return f"{exc}: " + UNIT_BLOCKS.format(address=host)
    return str(exc) or type(exc).__name__


def unit_blocks_receiver(url: str, budget_s: float) -> str | None:
    """Under systemd, a connect-only probe of an off-machine receiver: the warning to log when
    the unit's address filter refuses it (connect fails with EPERM), else None."""
    if "INVOCATION_ID" not in os.environ:
        return None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + budget_s
    found = addresses_within(host, port, deadline)
    if isinstance(found, str):
        return None  # the attempts will say why
    addresses = {str(info[4][0]) for info in found}
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return None
    try:
        connected(found, deadline).close()
        return None
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return (f"webhook {url}: connecting to {host} is not permitted; "
                    + UNIT_BLOCKS.format(address=", ".join(sorted(addresses))))
        return None  # unreachable now for another reason: the attempts will say so


class Webhook:
    def __init__(self, url: str, timeout_s: float, attempts: int, secret: str | None) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._secret = secret
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(WEBHOOK_QUEUE)
        self._stopping = threading.Event()
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name="ecosight-webhook", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        while True:
            try:
                self._queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                    logger.error("webhook queue full (%d): alert %s dropped", WEBHOOK_QUEUE, dropped["detection_id"])
                except queue.Empty:
                    pass

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)
        if self._queue.qsize():
            logger.warning("%d webhook alerts not delivered at shutdown (they are in the cache's detections)",
                           self._queue.qsize())

    def _run(self) -> None:
        blocked = unit_blocks_receiver(self._url, self._timeout_s)
        if blocked:
            logger.warning("%s", blocked)
        while not self._stopping.is_set():
            try:
                payload = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._deliver(payload)

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        for attempt in range(1, self._attempts + 1):
            answer = post_once(self._url, body, signature_headers(self._secret, body, time.time()), self._timeout_s)
            if answer.delivered:
                self.delivered += 1
                return
            if not answer.retry or attempt == self._attempts \
                    or self._stopping.wait(min(MAX_BACK_OFF_S, 2.0 ** (attempt - 1))):
                break
        logger.error("webhook %s: alert %s not delivered after %d attempt%s (%s)", self._url,
                     payload["detection_id"], attempt, "" if attempt == 1 else "s", answer.why)
