"""The HTTP server's own log hygiene: asyncio's accept errors while descriptors are
exhausted come thousands a second; one line a minute reaches the log."""

from __future__ import annotations

import logging
import sys

from ecosight_daemon.http.server import AcceptErrorsOncePerMinute


def accept_error() -> logging.LogRecord:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        exc_info = sys.exc_info()
    return logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1, "socket.accept() out of system resource",
                             None, exc_info)


def test_one_accept_error_a_minute_gets_through_without_its_traceback() -> None:
    throttle = AcceptErrorsOncePerMinute(interval_s=60)
    records = [accept_error() for _ in range(5_000)]
    passed = [record for record in records if throttle.filter(record)]
    assert len(passed) == 1 and passed[0].exc_info is None
    assert "Too many open files" in passed[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, "x.py", 1, "Task exception was never retrieved", None, None)
    assert throttle.filter(other)  # anything else asyncio says still gets through


def test_after_a_quiet_minute_the_next_one_says_how_many_were_held_back() -> None:
    throttle = AcceptErrorsOncePerMinute(interval_s=0.0)
    throttle.filter(accept_error())
    throttle.suppressed = 41  # as if 41 came within the last interval
    record = accept_error()
    assert throttle.filter(record) and "41 such errors" in record.getMessage()
