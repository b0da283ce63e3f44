"""Clients that do not play fair: a daemon run out of file descriptors by idle connections
keeps its loop, and once they close, everything that arrived meanwhile is taken in."""

from __future__ import annotations

import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ecosight_daemon.http.service_routes import MAX_EVENT_STREAMS
from testkit.daemon_process import DaemonProcess, idle_daemon, wait_for, write_config
from tests.reliability.test_bad_input import wav_bytes

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

DESCRIPTORS = 256  # the daemon's limit here (systemd's default soft limit is 1,024)
CONNECTIONS = 400  # more than it can hold
MAX_LOG_BYTES = 5_000_000


def open_idle_connections(host: str, port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.settimeout(2)
        try:
            connection.connect((host, port))
        except OSError:
            connection.close()
            continue
        held.append(connection)
    return held


def test_running_out_of_descriptors_neither_ends_the_loop_nor_loses_files(tmp_path: Path, yamnet_handle: str) -> None:
    (tmp_path / "audio" / "clips").mkdir(parents=True)
    write_config(tmp_path, yamnet_handle)
    daemon = DaemonProcess(tmp_path, prefix=("prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}")).start()
    try:
        daemon.wait_idle()
        address = urllib.parse.urlsplit(daemon.http_url)
        held = open_idle_connections(address.hostname or "127.0.0.1", address.port or 0, CONNECTIONS)
        try:
            for i in range(5):
                (daemon.audio / "clips" / f"during{i}.wav").write_bytes(wav_bytes(seed=40 + i))
            deadline = time.monotonic() + 15  # the daemon starved of descriptors for 15 s
            while time.monotonic() < deadline:
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_text()[-3000:]
                time.sleep(0.5)
        finally:
            for connection in held:
                connection.close()
        for i in range(5):  # nothing lost: what arrived while starved is taken in after
            daemon.wait_embedded(f"clips/during{i}.wav", timeout=90)
        wait_for(lambda: time.time() - daemon.status().get("updated_at", 0) < 10, 30, "a fresh status")
        assert len(held) > DESCRIPTORS / 2, "the test did not exhaust the daemon's descriptors"
        assert (tmp_path / "daemon.log").stat().st_size < MAX_LOG_BYTES
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def open_event_streams(host: str, port: int, count: int) -> tuple[list[socket.socket], list[int]]:
    """`count` GET /events on raw sockets, left open; the HTTP status each got."""
    streams, codes = [], []
    for _ in range(count):
        connection = socket.create_connection((host, port), timeout=10)
        connection.sendall(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        codes.append(int(connection.recv(64).split()[1]))
        streams.append(connection)
    return streams, codes


def test_hundreds_of_event_streams_leave_health_and_metrics_quick(tmp_path: Path, yamnet_handle: str) -> None:
    """300 open /events streams each held a worker thread: /health and /metrics took 7 s."""
    with idle_daemon(tmp_path, yamnet_handle) as daemon:
        address = urllib.parse.urlsplit(daemon.http_url)
        host, port = address.hostname or "127.0.0.1", address.port or 0
        streams, codes = open_event_streams(host, port, 300)
        try:
            assert codes.count(200) == MAX_EVENT_STREAMS and codes.count(503) == 300 - MAX_EVENT_STREAMS
            timings = []
            for _ in range(40):
                for route in ("health", "metrics"):
                    started = time.monotonic()
                    with urllib.request.urlopen(daemon.http_url + route, timeout=30) as answer:
                        assert answer.status == 200
                    timings.append(time.monotonic() - started)
            assert sorted(timings)[int(0.95 * len(timings))] < 0.5, sorted(timings)[-5:]
        finally:
            for stream in streams:
                stream.close()
        # closed streams give their places back
        def one_more_stream() -> bool:
            streams, codes = open_event_streams(host, port, 1)
            streams[0].close()
            return codes == [200]

        wait_for(one_more_stream, 30, "a free event stream again")


def closed_by_server(connection: socket.socket) -> bool:
    """True once the daemon has closed this connection (EOF or a reset)."""
    connection.settimeout(0.05)
    try:
        return connection.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_and_trickling_connections_are_closed_and_new_clients_get_in(tmp_path: Path, yamnet_handle: str) -> None:
    """Uvicorn kept a connection that never finished its first request forever: idle
    sockets took every descriptor, and a header sent a byte at a time held its connection."""
    limits = "max_connections = 20\nrequest_timeout_s = 2.0\nbody_timeout_s = 2.0"
    with idle_daemon(tmp_path, yamnet_handle, http=limits) as daemon:
        address = urllib.parse.urlsplit(daemon.http_url)
        host, port = address.hostname or "127.0.0.1", address.port or 0
        idle = open_idle_connections(host, port, 40)
        try:
            # Past the cap, the longest-waiting idle connections make room; a real client gets in.
            wait_for(lambda: sum(closed_by_server(c) for c in idle) >= 20, 5, "idle connections closed for room")
            with urllib.request.urlopen(f"{daemon.http_url}health", timeout=5) as answer:
                assert answer.status == 200
            # The rest are closed once the head deadline passes.
            wait_for(lambda: all(closed_by_server(c) for c in idle), 10, "every idle connection closed")
            trickle = socket.create_connection((host, port), timeout=5)
            idle.append(trickle)
            started = time.monotonic()
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ":
                try:
                    trickle.sendall(bytes([byte]))
                except OSError:
                    break
                if closed_by_server(trickle):
                    break
                time.sleep(0.25)
            assert closed_by_server(trickle) and time.monotonic() - started < 6
            stalled = socket.create_connection((host, port), timeout=10)
            idle.append(stalled)
            stalled.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: audio/wav\r\n"
                            "Content-Length: 100000\r\n\r\nRIFF".encode())
            started = time.monotonic()
            reply = stalled.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert time.monotonic() - started < 6
        finally:
            for connection in idle:
                connection.close()
        with urllib.request.urlopen(f"{daemon.http_url}health", timeout=5) as answer:
            assert answer.status == 200
        assert time.time() - daemon.status()["updated_at"] < 10
        assert "HTTP connections at the limit (20 open" in daemon.log_text()
