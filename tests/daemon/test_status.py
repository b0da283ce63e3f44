from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ecosight_daemon.daemon.states import DaemonState
from ecosight_daemon.daemon.status import read_status, write_status


def test_status_file_round_trip_and_staleness(tmp_path: Path) -> None:
    assert read_status(tmp_path)[1] is not None and "no daemon has run" in read_status(tmp_path)[1]  # type: ignore[operator]
    write_status(tmp_path, {"state": DaemonState.IDLE.value, "pid": os.getpid()})
    status, problem = read_status(tmp_path)
    assert problem is None and status is not None and status["state"] == "idle"
    status, problem = read_status(tmp_path, now=time.time() + 120)
    assert problem is not None and "stale" in problem


def test_dead_pid_and_clean_stop_are_reported(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_status(tmp_path, {"state": "idle", "pid": int(gone.stdout)})
    assert "did not stop cleanly" in (read_status(tmp_path)[1] or "")
    write_status(tmp_path, {"state": "stopped", "pid": os.getpid()})
    assert "stopped cleanly" in (read_status(tmp_path)[1] or "")


def test_the_daemon_lock_names_only_a_live_holder(tmp_path: Path) -> None:
    """A pid is trusted only while its lock is held: a dead daemon's file names nobody."""
    from ecosight_daemon.util.instance_lock import DaemonAlreadyRunning, hold_daemon_lock, running_daemon

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from ecosight_daemon.util.instance_lock import hold_daemon_lock; "
        f"lock = hold_daemon_lock(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert running_daemon(tmp_path) == holder.pid
        try:
            hold_daemon_lock(tmp_path)
            raise AssertionError("a second holder was allowed")
        except DaemonAlreadyRunning as exc:
            assert f"pid {holder.pid}" in str(exc) and exc.exit_code == 73
    finally:
        holder.kill()
        holder.wait()
    assert running_daemon(tmp_path) is None  # the file still names the pid; nobody holds it
    hold_daemon_lock(tmp_path).close()
