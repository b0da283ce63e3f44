from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ecosight_daemon.status import DaemonState, read_status, running_daemon_pid, write_status


def test_status_file_round_trip_and_staleness(tmp_path: Path) -> None:
    assert read_status(tmp_path)[1] is not None and "no daemon has run" in read_status(tmp_path)[1]  # type: ignore[operator]
    write_status(tmp_path, {"state": DaemonState.IDLE.value, "pid": os.getpid()})
    status, problem = read_status(tmp_path)
    assert problem is None and status is not None and status["state"] == "idle"
    assert running_daemon_pid(tmp_path) == os.getpid()
    status, problem = read_status(tmp_path, now=time.time() + 120)
    assert problem is not None and "stale" in problem


def test_dead_pid_and_clean_stop_are_reported(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_status(tmp_path, {"state": "idle", "pid": int(gone.stdout)})
    assert "did not stop cleanly" in (read_status(tmp_path)[1] or "")
    assert running_daemon_pid(tmp_path) is None
    write_status(tmp_path, {"state": "stopped", "pid": os.getpid()})
    assert "stopped cleanly" in (read_status(tmp_path)[1] or "")
