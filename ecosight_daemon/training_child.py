"""The parent's handle on one training process (see train_job.py for the child's side).

A child is started with `spawn` and imports TensorFlow at once; the daemon starts the
next one as soon as a retrain ends, so a retrain finds TensorFlow already loaded. Each
child serves one job and exits, so repeated fits never accumulate memory. The parent
keeps every decision: it sends the job, enforces the time limit, and stops the child
on request.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .artifacts import read_json
from .train_job import JobFiles, child_main

logger = logging.getLogger(__name__)

POLL_S = 0.5
TERMINATE_GRACE_S = 15.0


class ChildFailed(Exception):
    """The child did not answer: it died, was stopped, or ran past its time limit."""


class TrainingChild:
    def __init__(self, log_level: str = "INFO") -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=child_main, args=(child_end, log_level), name="ecosight-training")
        self._process.start()
        child_end.close()
        self._used = False
        logger.debug("training process started (pid %s)", self._process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def ready_for_a_job(self) -> bool:
        return not self._used and self._process.is_alive()

    def train(self, job: JobFiles, time_limit_s: float, should_stop: Callable[[], bool]) -> dict[str, Any]:
        """Run the job; the result the child wrote, or {"ok": False, "error": ...}."""
        self._used = True
        logger.info("training in process %s, time limit %.0f s", self._process.pid, time_limit_s)
        try:
            self._connection.send(str(job.folder))
            self._await(time_limit_s, should_stop)
        except (ChildFailed, OSError) as exc:
            return {"ok": False, "error": str(exc)}
        return read_json(job.result, default={"ok": False, "error": "training process wrote no result"})

    def export(self, target: Path, time_limit_s: float, should_stop: Callable[[], bool]) -> None:
        """Have the child save the end-to-end SavedModel of the model it just trained."""
        try:
            self._connection.send(("export", str(target)))
            status, error = self._await(time_limit_s, should_stop)
        except OSError as exc:
            raise ChildFailed(f"training process gone: {exc}") from exc
        if status != "exported":
            raise ChildFailed(error)

    def close(self) -> None:
        """Tell the child to exit; make sure it has. An unused child holds nothing: killed."""
        if not self._used:
            self._process.kill()
            self._process.join()
            self._connection.close()
            return
        try:
            self._connection.send(None)
        except OSError:
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._stop()
        self._connection.close()

    def _await(self, time_limit_s: float, should_stop: Callable[[], bool]) -> Any:
        deadline = time.monotonic() + time_limit_s
        while True:
            if self._connection.poll(POLL_S):
                try:
                    return self._connection.recv()
                except EOFError:  # it died: report how
                    self._process.join(timeout=5)
                    raise ChildFailed(self._how_it_died()) from None
            if not self._process.is_alive():
                raise ChildFailed(self._how_it_died())
            if should_stop():
                self._stop()
                raise ChildFailed("stopped on request")
            if time.monotonic() > deadline:
                self._stop()
                raise ChildFailed(f"took longer than time_limit_s ({time_limit_s:g} s)")

    def _how_it_died(self) -> str:
        code = self._process.exitcode
        if code is not None and code < 0:
            hint = " (out of memory?)" if code == -9 else ""
            return f"training process killed by signal {-code}{hint}"
        return f"training process exit code {code}"

    def _stop(self) -> None:
        self._process.terminate()  # SIGTERM: the child stops at the next epoch
        self._process.join(timeout=TERMINATE_GRACE_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
