"""TensorFlow's C++ start-up notes stay out of the log unless --log-level DEBUG; anything
else it prints while loading still shows, as a warning. Real processes, real TensorFlow."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, os, sys
logging.basicConfig(level=sys.argv[1], format="%(levelname)s %(name)s: %(message)s")
from ecosight_daemon.embedding.tf_start_up import start_up_notes_hidden
with start_up_notes_hidden():
    import tensorflow
    os.write(2, b"something TensorFlow has never said before\\n")
print("imported", flush=True)
"""


def run(level: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})


def test_start_up_notes_are_hidden_but_other_lines_are_logged() -> None:
    quiet = run("INFO")
    assert quiet.returncode == 0 and "imported" in quiet.stdout, quiet.stderr
    assert "oneDNN" not in quiet.stderr and "cuda" not in quiet.stderr.lower()
    assert "WARNING ecosight_daemon.embedding.tf_start_up: something TensorFlow has never said before" in quiet.stderr


def test_debug_shows_everything() -> None:
    loud = run("DEBUG")
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr  # what the default hides, so the other test proves something
