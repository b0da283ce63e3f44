"""Labeling uploads (`POST /predict`) off the main loop: one worker thread and a short
queue. Beyond it a request is refused at once (the HTTP side answers 503 with Retry-After),
so a flood of uploads costs a bounded amount of memory and never holds up the loop."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ecosight_daemon.daemon.client_requests import deliver
from ecosight_daemon.errors import AudioDecodeError, EcosightError
from ecosight_daemon.models.predict import Predictor

logger = logging.getLogger(__name__)

WORKERS = 1  # labeling shares the CPUs with embedding; more would only queue inside ONNX Runtime
MAX_WAITING = 4  # requests queued behind the running ones; each holds its upload (<= the upload cap)


def label_upload(predictor: Predictor | None, data: bytes) -> dict[str, Any]:
    """The answer to one upload, an error included ({"http_status": code, "error": why})."""
    try:
        if predictor is None:
            raise EcosightError("the daemon is still starting; try again in a moment")
        return predictor.label(data)
    except AudioDecodeError as exc:
        return {"http_status": 422, "error": str(exc)}
    except EcosightError as exc:
        return {"http_status": 409, "error": str(exc)}
    except Exception as exc:  # a model error on one upload must not stop the worker
        logger.exception("predict failed")
        return {"http_status": 500, "error": f"{type(exc).__name__}: {exc}"}


class PredictionWorker:
    def __init__(self) -> None:
        self._predictor: Predictor | None = None
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ecosight-predict")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.refused = 0

    def ready(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._pool.submit(lambda: None).result()  # its thread made now, with the daemon's others

    def submit(self, data: bytes) -> Future[dict[str, Any]] | None:
        """The answer to come; None when WORKERS + MAX_WAITING requests are already in."""
        with self._lock:
            if self._in_flight >= WORKERS + MAX_WAITING:
                self.refused += 1
                return None
            self._in_flight += 1
        reply: Future[dict[str, Any]] = Future()
        try:
            self._pool.submit(self._work, data, reply)
        except RuntimeError:  # shutting down
            self._done()
            return None
        return reply

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _work(self, data: bytes, reply: Future[dict[str, Any]]) -> None:
        try:
            if reply.cancelled():  # the client gave up while it waited: no work for nobody
                logger.info("a /predict request was given up before its turn; skipped")
                return
            deliver(reply, label_upload(self._predictor, data))
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1
