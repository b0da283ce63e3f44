"""The parent's handle on one training process (its own code is child_main.py).

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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ecosight_daemon.training.protocol import (
    DetectorJob,
    DetectorTrained,
    Exported,
    ExportFailed,
    ExportRequest,
    FitJob,
    Fitted,
    FromWorker,
    Progress,
    Shutdown,
    TrainingResult,
)

logger = logging.getLogger(__name__)

POLL_S = 0.5
TERMINATE_GRACE_S = 15.0


class TrainingProcessFailed(Exception):
    """The process did not answer: it died, was stopped, or ran past its time limit."""


class TrainingProcess:
    def __init__(self, log_level: str = "INFO") -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_worker_main, args=(child_end, log_level), name="ecosight-training")
        self._process.start()
        child_end.close()
        self._used = False
        logger.debug("training process started (pid %s)", self._process.pid)

    def ready_for_a_job(self) -> bool:
        return not self._used and self._process.is_alive()

    def train(self, job: FitJob, time_limit_s: float, should_stop: Callable[[], bool],
              on_progress: Callable[[Progress], None] | None = None) -> TrainingResult:
        """Run the job; its result, or a failed one saying why there is none."""
        self._used = True
        logger.info("training in process %s, time limit %.0f s", self._process.pid, time_limit_s)
        try:
            self._connection.send(job)
            answer = self._await(time_limit_s, should_stop, on_progress)
        except (TrainingProcessFailed, OSError) as exc:
            return TrainingResult.failed(str(exc))
        if not isinstance(answer, Fitted):
            return TrainingResult.failed(f"training process answered {answer!r}")
        return answer.result

    def train_detector(self, job: DetectorJob, time_limit_s: float, should_stop: Callable[[], bool],
                       on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Have the process train the version's event detector after its fit: its figures, or
        {"skipped": why} (the process died, was stopped or ran out of time: the version stands)."""
        try:
            self._connection.send(job)
            answer = self._await(time_limit_s, should_stop, on_progress)
        except (TrainingProcessFailed, OSError) as exc:
            return {"skipped": f"the training process did not finish the event detector ({exc})"}
        if not isinstance(answer, DetectorTrained):
            return {"skipped": f"training process answered {answer!r}"}
        return answer.figures

    def export(self, target: Path, time_limit_s: float, should_stop: Callable[[], bool], version: str = "") -> None:
        """Have the process save the end-to-end SavedModel of the model it just trained."""
        try:
            self._connection.send(ExportRequest(str(target), version))
            answer = self._await(time_limit_s, should_stop)
        except OSError as exc:
            raise TrainingProcessFailed(f"training process gone: {exc}") from exc
        if isinstance(answer, ExportFailed):
            raise TrainingProcessFailed(answer.error)
        if not isinstance(answer, Exported):
            raise TrainingProcessFailed(f"training process answered {answer!r}")

    def close(self) -> None:
        """Tell the child to exit; make sure it has. An unused child holds nothing: killed."""
        if not self._used:
            self._process.kill()
            self._process.join()
            self._connection.close()
            return
        try:
            self._connection.send(Shutdown())
        except OSError:
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._stop()
        self._connection.close()

    def _await(self, time_limit_s: float, should_stop: Callable[[], bool],
               on_progress: Callable[[Progress], None] | None = None) -> FromWorker:
        """The process's next answer; progress reports on the way go to `on_progress`."""
        deadline = time.monotonic() + time_limit_s
        while True:
            if self._connection.poll(POLL_S):
                try:
                    answer: FromWorker = self._connection.recv()
                    if isinstance(answer, Progress):
                        if on_progress is not None:
                            on_progress(answer)
                        continue
                    return answer
                except EOFError:  # it died: report how
                    self._process.join(timeout=5)
                    raise TrainingProcessFailed(self._how_it_died()) from None
            if not self._process.is_alive():
                raise TrainingProcessFailed(self._how_it_died())
            if should_stop():
                self._stop()
                raise TrainingProcessFailed("stopped on request")
            if time.monotonic() > deadline:
                self._stop()
                raise TrainingProcessFailed(f"took longer than time_limit_s ({time_limit_s:g} s)")

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


def _worker_main(connection: Connection, log_level: str) -> None:
    """The spawned process's entry: its code (scikit-learn, TensorFlow) is imported there
    only, never in the daemon."""
    from ecosight_daemon.training.child_main import worker_main

    worker_main(connection, log_level)
