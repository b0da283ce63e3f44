"""Pause points that only tests can set, to kill a process at a chosen moment.

With ECOSIGHT_PAUSE_AT=<name> and ECOSIGHT_PAUSE_FILE=<path> in the environment, the
process reaching point <name> writes its pid to <path> and sleeps until it is killed.
With ECOSIGHT_PAUSE_ONCE=1 too, only the first process to get there pauses (the file
exists afterwards): one hanging decode among many. Without them (always, in production)
`point` does nothing.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

PAUSE_AT_ENV = "ECOSIGHT_PAUSE_AT"
PAUSE_FILE_ENV = "ECOSIGHT_PAUSE_FILE"
PAUSE_ONCE_ENV = "ECOSIGHT_PAUSE_ONCE"


def warn_if_armed(logger: logging.Logger) -> None:
    """Say loudly that a test-only pause point is set: a production process must never have one."""
    if os.environ.get(PAUSE_AT_ENV):
        logger.warning("TEST HOOK ARMED: %s=%s will stop this process at that point until it is killed; "
                       "unset it outside tests", PAUSE_AT_ENV, os.environ[PAUSE_AT_ENV])


def point(name: str) -> None:
    if os.environ.get(PAUSE_AT_ENV) != name or not os.environ.get(PAUSE_FILE_ENV):
        return
    pause_file = Path(os.environ[PAUSE_FILE_ENV])
    if os.environ.get(PAUSE_ONCE_ENV) and pause_file.exists():
        return
    written = pause_file.with_name(f".{pause_file.name}.{os.getpid()}")
    written.write_text(str(os.getpid()))
    os.replace(written, pause_file)  # a test that sees the file reads the whole pid, never an empty file
    while True:
        time.sleep(0.1)
