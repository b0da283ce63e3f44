"""The loop's answers to HTTP clients: a client that has gone (its request timed out and
cancelled the future) never turns the answer into an exception in the loop."""

from __future__ import annotations

import io
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from ecosight_daemon.daemon.client_requests import answer_rollback
from ecosight_daemon.daemon.inbox import Rollback
from ecosight_daemon.daemon.predictions import PredictionWorker, label_upload
from ecosight_daemon.versions.registry import ModelRegistry


def gone() -> Future[dict[str, Any]]:
    reply: Future[dict[str, Any]] = Future()
    assert reply.cancel()  # what asyncio.wait_for does to it at the request's deadline
    return reply


def test_an_answer_for_a_client_that_left_is_dropped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.ensure()
    with caplog.at_level(logging.INFO):
        answer_rollback(Rollback("v0042", gone()), registry)  # 404 computed, nobody to give it to
    assert "the answer is dropped" in caplog.text


def test_a_waiting_client_still_gets_its_answer(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    registry.ensure()
    reply: Future[dict[str, Any]] = Future()
    answer_rollback(Rollback("v0042", reply), registry)
    assert reply.result(timeout=0)["http_status"] == 404
    assert label_upload(None, b"")["http_status"] == 409  # still starting: try again


def test_the_prediction_worker_answers_every_request_it_takes() -> None:
    """(Its bound under real load: tests/http/test_routes.py, the flood of uploads.)"""
    worker = PredictionWorker()  # no predictor yet: every answer is a quick 409
    try:
        uploads = [io.BytesIO(b"RIFF") for _ in range(200)]
        replies = [worker.submit(upload) if worker.reserve() else None for upload in uploads]
        taken = [reply for reply in replies if reply is not None]
        assert taken and worker.refused == 200 - len(taken)
        assert all(reply.result(timeout=10)["http_status"] == 409 for reply in taken)
        assert all(upload.closed for upload, reply in zip(uploads, replies, strict=True) if reply is not None)
        assert worker.reserve()  # room again once they are answered
        assert worker.submit(io.BytesIO(b"RIFF")).result(timeout=10)["http_status"] == 409
        assert worker.reserve()
        worker.release()  # an upload that never came gives its place back
    finally:
        worker.close()
