"""Model versions over HTTP: a version's figures and files, `POST /retrain`, `POST /rollback`
and `POST /predict` (an upload labelled by the current model on the daemon's worker)."""

from __future__ import annotations

import json
import re
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.daemon.inbox import RetrainRequested, Rollback
from ecosight_daemon.daemon.trigger_policy import HTTP_REASON_PREFIX
from ecosight_daemon.http.api_settings import ApiSettings, DaemonPort
from ecosight_daemon.http.bodies import BodyTooLarge, BodyTooSlow, discard, spooled_upload
from ecosight_daemon.http.guards import Guards, answer, too_slow
from ecosight_daemon.versions.registry import VERSION_PATTERN, ModelRegistry

MAX_REASON_CHARS = 500
PREDICT_RETRY_AFTER_S = 5
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

def add_model_routes(app: FastAPI, daemon: DaemonPort, settings: ApiSettings, guards: Guards,
                     registry: ModelRegistry) -> None:
    json_write, refusal = guards.json_write, guards.refusal

    @app.get("/models/{version}")
    def model(version: str) -> JSONResponse:
        metadata = _version_metadata(registry, version)
        if metadata is None:
            return JSONResponse({"error": f"no version named {version!r}"}, 404)
        folder = registry.version_dir(version)
        links = {name: f"/models/{version}/{name}" for name in files.PAGES if (folder / name).is_file()}
        keys = ("version", "date", "status", "decision_reason", "trigger_reason", "replaced_version", "classes",
                "sample_counts", "test_metrics", "priority_class", "priority_threshold", "gate", "model_fitted_on")
        return JSONResponse({**{key: metadata.get(key) for key in keys},
                             "current": version == registry.current_version(), "links": links})

    @app.get("/models/{version}/{name}")
    def version_file(version: str, name: str) -> Response:
        if name not in files.PAGES or _version_metadata(registry, version) is None:
            return JSONResponse({"error": "no such file"}, 404)
        path = registry.version_dir(version) / name
        if not path.is_file():
            return JSONResponse({"error": "no such file"}, 404)
        return FileResponse(path, headers={"Content-Security-Policy": "default-src 'none'; img-src 'self' data:; "
                                                                      "style-src 'unsafe-inline'"})

    @app.post("/retrain", status_code=202)
    async def retrain(request: Request) -> JSONResponse:
        body = await json_write(request)
        if isinstance(body, JSONResponse):
            return body
        reason = body.get("trigger_reason", "Manual retraining request") if body is not None else None
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS \
                or CONTROL_CHARACTERS.search(reason):
            return JSONResponse({"error": f'send {{"trigger_reason": "..."}}: text of 1 to {MAX_REASON_CHARS} '
                                          "characters without control characters"}, 422)
        running = bool(daemon.snapshot().get("retrain_running"))
        daemon.post(RetrainRequested(HTTP_REASON_PREFIX + reason))
        return JSONResponse({
            "accepted": True, "trigger_reason": HTTP_REASON_PREFIX + reason,
            "when": "after the current retrain (requests made meanwhile merge into that one run)" if running
            else "now",
        }, 202)

    @app.post("/rollback")
    async def rollback(request: Request) -> JSONResponse:
        body = await json_write(request)
        if isinstance(body, JSONResponse):
            return body
        version = None if body is None else body.get("version")
        if body is None or (version is not None and not isinstance(version, str)):
            return JSONResponse({"error": 'send {"version": "v0003"} (or {} for the one before the current)'}, 422)
        reply: Future[dict[str, Any]] = Future()
        daemon.post(Rollback(version, reply))
        return await answer(reply)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        refused = refusal(request, json_body=False)
        if refused is not None:
            return refused
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/octet-stream" and not media.startswith("audio/"):
            return JSONResponse({"error": "send the audio file's bytes as application/octet-stream "
                                          "(curl --data-binary @clip.wav -H 'Content-Type: application/octet-stream')"},
                                415)
        # A place in the queue first: a flood of uploads is refused before it is read.
        if not daemon.reserve_prediction():
            await discard(request, settings.max_upload_bytes, settings.body_timeout_s)
            return JSONResponse({"error": "busy labeling other uploads; try again in a few seconds"}, 503,
                                headers={"Retry-After": str(PREDICT_RETRY_AFTER_S)})
        try:
            upload = await spooled_upload(request, settings.max_upload_bytes, settings.body_timeout_s)
        except BodyTooLarge:
            daemon.release_prediction()
            return JSONResponse({"error": f"larger than {settings.max_upload_bytes / 1e6:g} MB"}, 413)
        except BaseException as exc:  # too slow, or the client went away
            daemon.release_prediction()
            if isinstance(exc, BodyTooSlow):
                return too_slow(settings.body_timeout_s)
            raise
        return await answer(daemon.predict(upload))


def _version_metadata(registry: ModelRegistry, version: str) -> dict[str, Any] | None:
    if not VERSION_PATTERN.fullmatch(version):
        return None
    path = registry.version_dir(version) / files.METADATA
    try:
        metadata: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metadata
