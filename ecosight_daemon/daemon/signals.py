"""Signals to inbox messages: SIGHUP reloads and retrains, SIGTERM/SIGINT stop.

Handlers only queue: logging or touching SQLite here could deadlock on a lock the
interrupted main thread holds. A second stop signal exits at once, which is safe
because every write is a transaction or an atomic replace.
"""

from __future__ import annotations

import os
import signal

from ecosight_daemon.daemon.inbox import Inbox, ReloadConfig, Stop


class SignalsToInbox:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._stop_signals = 0

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: object = None) -> None:
        if signum == signal.SIGHUP:
            self._inbox.put(ReloadConfig())
            return
        self._stop_signals += 1
        if self._stop_signals > 1:
            os._exit(128 + signum)
        self._inbox.put(Stop(signal.Signals(signum).name))
