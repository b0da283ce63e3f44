"""The webhook against real receivers on local sockets.

On be16e0d a receiver that answered 302 to a loopback URL had the alert follow it to any
host, and one that trickled its answer a byte a second held the only webhook thread for
~17 minutes while later alerts queued and were dropped; the payload was unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ecosight_daemon.daemon.webhook import Webhook, post_once, signature_headers
from testkit.daemon_process import wait_for

BUDGET_S = 1.5


class Receiver:
    """A local HTTP server; `answer` picks each POST's status and headers."""

    def __init__(self, answer: Any = lambda receiver: (200, {})) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.posts.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                status, headers = answer(receiver)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"x" * 100_000)  # a body the webhook never needs to read

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Trickler:
    """Accepts connections and answers each with its status line one byte a second, forever
    (the first `trickled` connections; later ones are answered 200 at once)."""

    def __init__(self, trickled: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.trickled, self.connections, self.answered = trickled, 0, 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections <= self.trickled), daemon=True).start()

    def _serve(self, conn: socket.socket, trickle: bool) -> None:
        with conn:
            conn.recv(65536)
            try:
                if not trickle:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    self.answered += 1
                    return
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                    conn.sendall(bytes([byte]))
                    time.sleep(1.0)
            except OSError:
                return


def alert(number: int) -> dict[str, Any]:
    return {"detection_id": number, "class": "gun_shot"}


def test_a_redirect_is_reported_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = Receiver()
    redirecting = Receiver(lambda r: (302, {"Location": elsewhere.url}))
    try:
        answer = post_once(redirecting.url, b"{}", {}, BUDGET_S)
        assert not answer.delivered and not answer.retry and "not followed" in answer.why
        hook = Webhook(redirecting.url, BUDGET_S, 4, None)
        with caplog.at_level(logging.ERROR):
            hook.send(alert(1))
            wait_for(lambda: "not delivered after 1 attempt " in caplog.text, 10, "the redirect reported")
        hook.close()
        assert len(redirecting.posts) == 2 and elsewhere.posts == []  # one attempt each, never followed
        assert "a redirect to" in caplog.text and elsewhere.url in caplog.text
    finally:
        elsewhere.close()
        redirecting.close()


def test_a_trickling_receiver_is_cut_off_at_the_deadline_and_later_alerts_go_out() -> None:
    trickler = Trickler(trickled=1)
    try:
        began = time.monotonic()
        answer = post_once(trickler.url, b"{}", {}, BUDGET_S)
        took = time.monotonic() - began
        assert not answer.delivered and answer.retry and f"within {BUDGET_S:g} s" in answer.why
        assert took < BUDGET_S + 1.0, took  # on be16e0d: one recv timeout per byte, ~17 min
        hook = Webhook(trickler.url, BUDGET_S, 3, None)
        hook.send(alert(2))
        wait_for(lambda: hook.delivered == 1, 30, "the next alert delivered")
        hook.close()
    finally:
        trickler.listener.close()


def test_a_resolver_that_never_answers_costs_an_attempt_its_deadline_not_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake resolver: there is no DNS server here to make slow. Before, the lookup ran
    # outside the deadline (glibc: 5 s per try and server), holding the webhook's thread.
    released = threading.Event()
    real_lookup = socket.getaddrinfo

    def silent_resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "receiver.example":
            released.wait(60)
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent_resolver)
    try:
        began = time.monotonic()
        answer = post_once("http://receiver.example/alerts", b"{}", {}, BUDGET_S)
        took = time.monotonic() - began
        assert not answer.delivered and answer.retry and "resolver did not answer" in answer.why
        assert took < BUDGET_S + 1.0, took
    finally:
        released.set()


def test_a_receiver_named_by_host_name_is_reached_through_its_resolved_address() -> None:
    receiver = Receiver()
    try:
        by_name = receiver.url.replace("127.0.0.1", "localhost")
        assert post_once(by_name, b'{"a": 1}', {}, BUDGET_S).delivered
        headers, body = receiver.posts[0]
        assert body == b'{"a": 1}' and headers["Host"].startswith("localhost:")
    finally:
        receiver.close()


def test_a_configured_key_signs_each_post_so_a_receiver_can_verify_it() -> None:
    receiver = Receiver()
    secret = "k" * 32
    try:
        hook = Webhook(receiver.url, BUDGET_S, 2, secret)
        hook.send(alert(3))
        wait_for(lambda: hook.delivered == 1, 10, "the alert delivered")
        hook.close()
        headers, body = receiver.posts[0]
        stamp = headers["X-EcoSight-Timestamp"]
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-EcoSight-Signature"], f"sha256={expected}")
        assert abs(int(stamp) - time.time()) < 60 and json.loads(body) == alert(3)
        assert signature_headers(None, body, time.time()) == {}
        forged = signature_headers("another key of 32 characters....", body, float(stamp))
        assert forged["X-EcoSight-Signature"] != headers["X-EcoSight-Signature"]
    finally:
        receiver.close()


def test_server_errors_are_retried_and_client_errors_are_not() -> None:
    failing = Receiver(lambda r: (503, {}) if len(r.posts) == 1 else (200, {}))
    refusing = Receiver(lambda r: (404, {}))
    try:
        hook = Webhook(failing.url, BUDGET_S, 3, None)
        hook.send(alert(4))
        wait_for(lambda: hook.delivered == 1, 20, "delivered on the second attempt")
        hook.close()
        assert len(failing.posts) == 2
        answer = post_once(refusing.url, b"{}", {}, BUDGET_S)
        assert not answer.delivered and not answer.retry and answer.why == "answered 404"
    finally:
        failing.close()
        refusing.close()
