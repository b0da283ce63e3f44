"""sd_notify over the NOTIFY_SOCKET datagram: READY, STATUS, STOPPING, WATCHDOG, EXTEND_TIMEOUT_USEC.

A no-op outside systemd (no NOTIFY_SOCKET in the environment).
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ) if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self._address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the main loop: a reader that stopped reading fills the
                # socket's queue, and a blocking send would wedge the daemon.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone, queue full or socket unreachable: keep running
            logger.debug("sd_notify %r failed: %s", message, exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def extend_start_timeout(self, seconds: float) -> None:
        """Long start-up work (the one-time ONNX conversion) asks for more time than the
        unit's TimeoutStartSec, a slice at a time, instead of being killed mid-way."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")
