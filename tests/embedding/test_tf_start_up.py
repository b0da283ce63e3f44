"""TensorFlow's C++ start-up notes stay out of the log unless --log-level DEBUG; anything
else it prints while loading still shows, as a warning. Real processes, real TensorFlow."""

from __future__ import annotations

import re
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


# TensorFlow's C++ start-up notes: absl-style lines ("I0000 00:00:...") whose wording varies
# with the version and the CPU (oneDNN, cuda, cpu_feature_guard).
C_NOTE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:", re.MULTILINE)


def run(level: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})


def test_start_up_notes_are_hidden_but_other_lines_are_logged() -> None:
    quiet = run("INFO")
    assert quiet.returncode == 0 and "imported" in quiet.stdout, quiet.stderr
    assert not C_NOTE.search(quiet.stderr), quiet.stderr
    assert "WARNING ecosight_daemon.embedding.tf_start_up: something TensorFlow has never said before" in quiet.stderr


def test_debug_shows_everything() -> None:
    loud = run("DEBUG")
    assert loud.returncode == 0
    assert C_NOTE.search(loud.stderr), loud.stderr  # what the default hides, so the other test proves something
