"""Hostile clients and files against a real daemon, before and after: each case's peak RSS
(the daemon and its children), the longest run of `/health` answers that were not 200,
the loop's stalest status, and whether the daemon was still running and stopped on SIGTERM.

`python -m benchmarks.hostile_clients [SOURCE]`: SOURCE is another checkout of the project
(`git worktree add /tmp/before <commit>`) whose daemon is measured instead of this one's,
with the same harness, for a before/after table. Not part of `make bench`: it takes ~6
minutes per checkout and measures robustness, not speed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.common import process_tree_usage, wait_for, yamnet_handle
from ecosight_daemon.daemon.status import STATUS_FILE
from testkit.audio_files import synthetic_signal
from testkit.daemon_process import DaemonProcess, write_config


def clip_bytes(seconds: float, seed: int, fmt: str = "WAV", kind: str = "noise") -> bytes:
    out = io.BytesIO()
    soundfile.write(out, synthetic_signal(kind, seconds, 16_000, seed), 16_000, format=fmt)
    return out.getvalue()


class Watch:
    """Samples the daemon every 0.2 s while a case runs: RSS of its tree, /health, status age."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.peak_rss_mib = 0.0  # the daemon and its children (decoders, the training process)
        self.peak_own_rss_mib = 0.0  # the daemon alone
        self.longest_unhealthy_s = 0.0
        self.stalest_status_s = 0.0
        self._unhealthy_since: float | None = None
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()

    def _sample(self) -> None:
        while self._running:
            now = time.monotonic()
            try:
                usage = process_tree_usage(self.daemon.pid)
                self.peak_rss_mib = max(self.peak_rss_mib, usage["rss_mib"])
                self.peak_own_rss_mib = max(self.peak_own_rss_mib, usage["own_rss_mib"])
            except OSError:
                pass
            healthy = health(self.daemon) == 200
            if healthy:
                self._unhealthy_since = None
            else:
                self._unhealthy_since = self._unhealthy_since or now
                self.longest_unhealthy_s = max(self.longest_unhealthy_s, now - self._unhealthy_since)
            try:
                self.stalest_status_s = max(self.stalest_status_s, time.time() - self.daemon.status()["updated_at"])
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)


def health(daemon: DaemonProcess) -> int:
    try:
        with urllib.request.urlopen(f"{daemon.http_url}health", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def post(url: str, body: bytes, content_type: str, timeout: float = 180) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def address(daemon: DaemonProcess) -> tuple[str, int]:
    host_port = daemon.http_url.split("//", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


def predict_flood(daemon: DaemonProcess) -> dict[str, Any]:
    """150 parallel uploads of a 600 s clip (FLAC, ~2.5 MB)."""
    clip = clip_bytes(600.0, seed=1, fmt="FLAC", kind="tone")
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(post(f"{daemon.http_url}predict", clip,
                                                                 "application/octet-stream")))
               for _ in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answers": {str(c): codes.count(c) for c in sorted(set(codes))}, "upload_mb": round(len(clip) / 1e6, 1)}


def idle_connections(daemon: DaemonProcess) -> dict[str, Any]:
    """1,100 idle TCP connections held 30 s (the daemon at 1,024 descriptors), 5 clips dropped meanwhile."""
    host, port = address(daemon)
    held = []
    for _ in range(1_100):
        connection = socket.socket()
        connection.settimeout(2)
        try:
            connection.connect((host, port))
            held.append(connection)
        except OSError:
            connection.close()
    started = time.monotonic()
    for i in range(5):
        (daemon.audio / "clips" / f"during{i}.wav").write_bytes(clip_bytes(2.0, seed=40 + i))
    embedded_after = None
    while time.monotonic() - started < 30:
        if embedded_after is None and sum(s == "embedded" for p, s in daemon.embedded_paths().items()
                                          if "during" in p) == 5:
            embedded_after = time.monotonic() - started
        time.sleep(0.5)
    for connection in held:
        connection.close()
    if embedded_after is None:
        try:
            wait_for(lambda: sum(s == "embedded" for p, s in daemon.embedded_paths().items() if "during" in p) == 5,
                     60, "the 5 clips")
            embedded_after = time.monotonic() - started
        except AssertionError:  # never, within the minute
            pass
    return {"connected": len(held), "five_clips_embedded_after_s": embedded_after,
            "log_mb": round((daemon.root / "daemon.log").stat().st_size / 1e6, 2)}


def slow_headers(daemon: DaemonProcess) -> dict[str, Any]:
    """200 connections sending their request head a byte every 2 s, for 40 s."""
    host, port = address(daemon)
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    held = [socket.create_connection((host, port), timeout=5) for _ in range(200)]
    closed_at: dict[int, float] = {}
    started = time.monotonic()
    for step in range(20):
        for index, connection in enumerate(held):
            if index in closed_at:
                continue
            try:
                connection.sendall(head[step:step + 1])
            except OSError:
                closed_at[index] = time.monotonic() - started
        time.sleep(2)
    for connection in held:
        connection.close()
    return {"closed_by_daemon": len(closed_at),
            "closed_within_s": round(max(closed_at.values()), 1) if closed_at else None}


def event_streams(daemon: DaemonProcess) -> dict[str, Any]:
    """300 open GET /events streams; /health answer times meanwhile."""
    host, port = address(daemon)
    held = []
    for _ in range(300):
        connection = socket.create_connection((host, port), timeout=5)
        connection.sendall(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        held.append(connection)
    times = []
    for _ in range(20):
        started = time.monotonic()
        health(daemon)
        times.append(time.monotonic() - started)
    for connection in held:
        connection.close()
    return {"health_p95_ms": round(float(np.percentile(times, 95)) * 1000, 1)}


def retrain_storm(daemon: DaemonProcess) -> dict[str, Any]:
    """5,000 POST /retrain with distinct 500-character reasons, starting with a first retrain."""
    codes: list[int] = []
    for i in range(5_000):
        reason = f"{i:05d}" + "x" * 495
        codes.append(post(f"{daemon.http_url}retrain", json.dumps({"trigger_reason": reason}).encode(),
                          "application/json", timeout=10))
    daemon.wait_idle(600)
    versions = sorted(p.name for p in (daemon.models / "versions").iterdir() if p.name.startswith("v"))
    log = daemon.retrain_log()
    status_file = daemon.models / STATUS_FILE
    return {"answers": {str(c): codes.count(c) for c in sorted(set(codes))}, "versions": len(versions),
            "attempts": len(log) - 1, "longest_reason_chars": max(len(e["trigger_reason"]) for e in log),
            "status_file_kb": round(status_file.stat().st_size / 1e3, 1)}


def big_body(daemon: DaemonProcess) -> dict[str, Any]:
    """POST /retrain with a 200 MB body, streamed."""
    host, port = address(daemon)
    connection = socket.create_connection((host, port), timeout=30)
    connection.sendall(f"POST /retrain HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n".encode())
    block = b"x" * 1_000_000
    sent = 0
    try:
        for _ in range(200):
            connection.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            sent += len(block)
        connection.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    try:
        reply = connection.recv(200).split(b"\r\n", 1)[0].decode()
    except OSError as exc:
        reply = str(exc)
    connection.close()
    return {"sent_mb": sent // 1_000_000, "reply": reply}


CASES: list[tuple[str, Callable[[DaemonProcess], dict[str, Any]], dict[str, str]]] = [
    ("150 parallel /predict of a 600 s clip", predict_flood, {}),
    ("1,100 idle connections at 1,024 descriptors", idle_connections, {}),
    ("200 connections sending a head byte every 2 s", slow_headers, {}),
    ("300 open /events streams", event_streams, {}),
    ("200 MB body to /retrain", big_body, {}),
    ("5,000 POST /retrain, distinct reasons", retrain_storm, {}),
]


def run_case(source: Path | None, name: str, case: Callable[[DaemonProcess], dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        root = Path(tmp)
        for label, kind in (("gun_shot", 1), ("clips", 2)):
            for i in range(4):
                path = root / "audio" / label / f"{label}{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(clip_bytes(1.0, seed=10 * kind + i))
        write_config(root, yamnet_handle(), training="min_class_files = 3\nkeep_warm = false")
        # `python -m` puts its working directory first on sys.path: run the other
        # checkout's daemon from that checkout, so its package is the one imported.
        elsewhere = ("env", f"--chdir={source}", f"PYTHONPATH={source}") if source else ()
        daemon = DaemonProcess(root, log_level="INFO", notify=False,
                               prefix=("prlimit", "--nofile=1024:1024", *elsewhere))
        daemon.start(wait_ready=False)
        try:
            daemon.wait_idle(300)
            post(f"{daemon.http_url}retrain", b'{"trigger_reason": "a first model"}', "application/json")
            wait_for(daemon.retrain_log, 300, "the first model")
            daemon.wait_idle(300)
            with Watch(daemon) as watch:
                try:
                    details = case(daemon)
                except Exception as exc:  # a daemon that stopped answering: recorded, the next case runs
                    details = {"error": f"{type(exc).__name__}: {exc}"}
                time.sleep(2)
            alive = daemon.proc is not None and daemon.proc.poll() is None
            asked = time.monotonic()
            if alive:
                daemon.signal(signal.SIGTERM)
                try:
                    daemon.proc.wait(timeout=60)  # type: ignore[union-attr]
                    stop_s: float | None = round(time.monotonic() - asked, 1)
                except Exception:
                    stop_s = None
            else:
                stop_s = None
        finally:
            daemon.kill()
        return {"case": name, "peak_rss_mib": round(watch.peak_rss_mib),
                "peak_own_rss_mib": round(watch.peak_own_rss_mib), "longest_unhealthy_s":
                round(watch.longest_unhealthy_s, 1), "stalest_status_s": round(watch.stalest_status_s, 1),
                "alive_after": alive, "stop_s": stop_s, **details}


def main() -> int:
    source = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = []
    chosen = os.environ.get("HOSTILE_CASES")  # e.g. "2,3": only those (1-based), to finish an interrupted run
    for number, (name, case, _) in enumerate(CASES, 1):
        if chosen and str(number) not in chosen.split(","):
            continue
        print(f"running: {name} ...", flush=True)
        result = run_case(source, name, case)
        print(json.dumps(result), flush=True)
        results.append(result)
    out = Path("benchmarks/results") / f"hostile_clients{'_' + source.name if source else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
