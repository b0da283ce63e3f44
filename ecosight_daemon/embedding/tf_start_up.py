"""TensorFlow's C++ start-up notes (oneDNN is on, no CUDA driver, no GPU) kept out of the log.

They are printed to the process's stderr before TensorFlow's own logging starts, so
TF_CPP_MIN_LOG_LEVEL cannot hide them. While TensorFlow loads, stderr goes to a temporary
file; afterwards the known notes are dropped and anything else is logged as a warning.
With --log-level DEBUG nothing is hidden.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

START_UP_NOTE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] .*"
    r"|E\d{4} [\d:. ]+\d+ cuda_(platform|executor)\.cc:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)$"
)


@contextmanager
def start_up_notes_hidden() -> Iterator[None]:
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip() and not START_UP_NOTE.match(line):
                    logger.warning("%s", line)
