"""A real daemon process for tests and benchmarks: its own session, a NOTIFY_SOCKET the
test drains as systemd would, and helpers that read what the daemon writes (status,
log, cache). `wait_for` is the one way tests and benchmarks wait for something."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecosight_daemon.daemon.status import STATUS_FILE

ONNX_BODY_ENV = "ECOSIGHT_TEST_ONNX_BODY"  # set by the test session: a converted YAMNet body


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class DaemonProcess:
    """`ecosight-daemon run` on root/config.toml in its own session; with `notify`, a
    NOTIFY_SOCKET (and a 2 s systemd watchdog) the test reads."""

    def __init__(self, root: Path, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 log_level: str = "INFO", notify: bool = True) -> None:
        self.root = root
        self.prefix = prefix  # e.g. setpriv, to run it without some privileges
        self.extra_env = env or {}
        self.log_level = log_level
        self.notify = notify
        self.models = root / "models"
        self.audio = root / "audio"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []
        self._socket: socket.socket | None = None

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.notifications = []
        env = {**os.environ, **self.extra_env}
        if self.notify:
            env.update(NOTIFY_SOCKET=self._listen_for_notifications(), WATCHDOG_USEC="2000000")
        self.log = (self.root / "daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "ecosight_daemon", "--config", str(self.root / "config.toml"),
             "--log-level", self.log_level, "run"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        if wait_ready and self.notify:
            wait_for(lambda: self.received("READY=1"), 120, "READY=1 on NOTIFY_SOCKET")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _listen_for_notifications(self) -> str:
        address = str(self.root / f"notify-{time.monotonic_ns()}.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(address)
        self._socket.settimeout(0.2)
        self._reading = threading.Event()
        self._reading.set()
        self._reader = threading.Thread(target=self._read_notifications, name="test-notify-reader", daemon=True)
        self._reader.start()
        return address

    def _read_notifications(self) -> None:
        """Drain the socket as systemd would, so the daemon's queue never fills."""
        assert self._socket is not None
        while self._reading.is_set():
            try:
                self.notifications.extend(self._socket.recv(4096).decode().split("\n"))
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return

    def received(self, message: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None and message not in self.notifications:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        return message in self.notifications

    def log_text(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.models / STATUS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def http_url(self) -> str:
        """The daemon's HTTP address (from its status), once it is serving."""
        return str(wait_for(lambda: self.status().get("http"), 120, "the daemon's HTTP address"))

    def retrain_log(self) -> list[dict[str, Any]]:
        try:
            return json.loads((self.models / "retraining_log.json").read_text())
        except FileNotFoundError:
            return []

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._socket is not None:
            self._reading.clear()
            self._reader.join(timeout=5)
            self._socket.close()
            self._socket = None
        if not self.log.closed:
            self.log.close()

    def embedded_paths(self) -> dict[str, str]:
        with sqlite3.connect(self.models / "embedding_cache.sqlite3") as db:
            return dict(db.execute("SELECT path, state FROM files").fetchall())

    def embedding_rows(self) -> int:
        with sqlite3.connect(self.models / "embedding_cache.sqlite3") as db:
            return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def wait_embedded(self, relpath: str, timeout: float = 60) -> None:
        wait_for(lambda: self.embedded_paths().get(relpath) == "embedded", timeout, f"{relpath} embedded")

    def wait_idle(self, timeout: float = 120) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status()).get("state") == "idle" and not s.get("retrain_running")
                        and not s.get("retrain_queued") and s.get("pending") == 0 and s.get("settling") == 0
                        and s, timeout, "daemon idle")


@contextmanager
def idle_daemon(root: Path, handle: str, **overrides: str) -> Iterator[DaemonProcess]:
    """A daemon on root (audio/clips/ made), started and idle; killed afterwards."""
    (root / "audio" / "clips").mkdir(parents=True, exist_ok=True)
    write_config(root, handle, **overrides)
    process = DaemonProcess(root).start()
    try:
        process.wait_idle(120)
        yield process
    finally:
        process.kill()


def write_config(root: Path, handle: str, **overrides: str) -> None:
    """A test config; each keyword is a section whose `key = value` lines replace the defaults."""
    sections: dict[str, dict[str, str]] = {
        "paths": {"audio_dir": '"audio"', "models_dir": '"models"'},
        "embedding": {"yamnet_handle": f'"{handle}"'},
        "training": {"min_class_files": "3", "epochs": "30", "patience": "5"},
        "triggers": {"min_new_samples": "1000"},
        "watch": {"settle_s": "0.5"},
        "http": {"port": "0"},  # a free port; status["http"] says which
        # Synthetic clips teach little; floors of 0 let the first model through so the
        # tests can follow promotion. Gate quality is tested in test_retrain.py.
        "promotion": {"min_macro_f1": "0.0", "min_priority_recall": "0.0"},
        # The shot CNN's Keras fits (~50 s a retrain on the dev corpus) where a test is about
        # it only (tests/versions/test_retrain.py, the detect fixture); these retrain often.
        "detection": {"shot_cnn_epochs": "0"},
    }
    for name, text in overrides.items():
        for line in text.splitlines():
            key, value = (part.strip() for part in line.split("=", 1))
            sections.setdefault(name, {})[key] = value
    (root / "config.toml").write_text("".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) for name, keys in sections.items()
    ))
    seed_onnx_body(root / "models")


def seed_onnx_body(models_dir: Path) -> None:
    """Put the session's converted body where a daemon on models_dir looks for it."""
    source = os.environ.get(ONNX_BODY_ENV)
    if source:
        target = models_dir / "onnx" / Path(source).name
        if not target.exists():
            shutil.copytree(source, target)
