"""One daemon per models_dir: an flock held for the daemon's whole life.

The kernel drops the lock when the process dies, however it dies, so a stale lock file
never blocks a restart; and a pid read from the file is trusted only while its lock is
held (a status file's pid may belong to an unrelated process by now).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ecosight_daemon.errors import EXIT_ALREADY_RUNNING, EcosightError

DAEMON_LOCK = ".daemon.lock"


class DaemonAlreadyRunning(EcosightError):
    exit_code = EXIT_ALREADY_RUNNING


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def hold_daemon_lock(models_dir: Path) -> IO[str]:
    """Take the lock for this process's lifetime (keep the returned file open)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    handle = open(models_dir / DAEMON_LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DaemonAlreadyRunning(
            f"a daemon already runs with models_dir {models_dir} (pid {holder}); stop it first "
            "(systemctl stop ecosight-daemon), or give this one another models_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def running_daemon(models_dir: Path) -> int | None:
    """The pid of the daemon holding models_dir's lock, or None when no daemon holds it."""
    try:
        handle = open(models_dir / DAEMON_LOCK)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def refuse_while_a_daemon_runs(models_dir: Path, command: str, instead: str) -> None:
    pid = running_daemon(models_dir)
    if pid is not None:
        raise DaemonAlreadyRunning(f"a daemon (pid {pid}) runs with models_dir {models_dir}; `{command}` would "
                                   f"compete with it. {instead}")
