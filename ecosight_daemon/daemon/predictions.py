"""Labeling uploads (`POST /predict`) off the main loop: one worker thread and a short
queue. A request takes its place in the queue before its upload is read; beyond the queue
it is refused at once (the HTTP side answers 503 with Retry-After), so a flood of uploads
costs a bounded amount of memory and never holds up the loop. Waiting uploads are spooled
files (on disk when large), read when their turn comes."""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from ecosight_daemon.daemon.client_requests import deliver
from ecosight_daemon.embedding.interface import Embedder
from ecosight_daemon.errors import AudioDecodeError, EcosightError
from ecosight_daemon.ingest.isolated_decode import DecoderInterrupted, IsolatedDecoder
from ecosight_daemon.ingest.limits import IngestLimits
from ecosight_daemon.versions.predict import Predictor
from ecosight_daemon.versions.registry import ModelRegistry

logger = logging.getLogger(__name__)

WORKERS = 1  # labeling shares the CPUs with embedding; more would only queue inside ONNX Runtime
MAX_WAITING = 4  # requests queued behind the running ones; each holds its upload (<= the upload cap)
# An upload is a clip (a 600 s one decodes in about a second): a client waits at most this
# long for a file that hangs the decoder, whatever [audio] max_decode_s allows the watcher.
UPLOAD_DECODE_S = 10.0


def label_upload(predictor: Predictor | None, data: bytes) -> dict[str, Any]:
    """The answer to one upload, an error included ({"http_status": code, "error": why})."""
    try:
        if predictor is None:
            raise EcosightError("the daemon is still starting; try again in a moment")
        return predictor.label(data)
    except AudioDecodeError as exc:
        return {"http_status": 422, "error": str(exc)}
    except DecoderInterrupted as exc:
        return {"http_status": 503, "error": f"{exc} while decoding this upload; try again later"}
    except EcosightError as exc:
        return {"http_status": 409, "error": str(exc)}
    except Exception as exc:  # a model error on one upload must not stop the worker
        logger.exception("predict failed")
        return {"http_status": 500, "error": f"{type(exc).__name__}: {exc}"}


class PredictionWorker:
    def __init__(self) -> None:
        self._predictor: Predictor | None = None
        self._decoder: IsolatedDecoder | None = None  # uploads are decoded in a process that can be stopped
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ecosight-predict")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.refused = 0

    def ready(self, registry: ModelRegistry, embedder: Embedder, limits: IngestLimits) -> None:
        upload_limits = dataclasses.replace(limits, max_decode_s=min(limits.max_decode_s, UPLOAD_DECODE_S))
        self._decoder = IsolatedDecoder(upload_limits)  # its process starts with the first upload
        self._predictor = Predictor(registry, embedder, limits, self._decoder.decode)
        self._pool.submit(lambda: None).result()  # its thread made now, with the daemon's others

    def reserve(self) -> bool:
        """A place for one more upload; False when WORKERS + MAX_WAITING are already taken."""
        with self._lock:
            if self._in_flight >= WORKERS + MAX_WAITING:
                self.refused += 1
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Give back a place not used (the upload was too large, too slow, or abandoned)."""
        self._done()

    def submit(self, upload: IO[bytes]) -> Future[dict[str, Any]]:
        """The answer to come for an upload that holds a place (reserve()); the file is closed after."""
        reply: Future[dict[str, Any]] = Future()
        try:
            self._pool.submit(self._work, upload, reply)
        except RuntimeError:  # shutting down
            upload.close()
            self._done()
            reply.set_result({"http_status": 503, "error": "the daemon is stopping"})
        return reply

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.interrupt()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._decoder is not None:
            self._decoder.close()

    def _work(self, upload: IO[bytes], reply: Future[dict[str, Any]]) -> None:
        try:
            if reply.cancelled():  # the client gave up while it waited: no work for nobody
                logger.info("a /predict request was given up before its turn; skipped")
                return
            deliver(reply, label_upload(self._predictor, upload.read()))
        finally:
            upload.close()
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1
