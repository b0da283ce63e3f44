"""The HTTP API and dashboard (FastAPI), served on a thread of its own.

House rule: a handler reads the status snapshot the main loop publishes, or files the
daemon already wrote (the log, a version's report), and puts commands on the inbox. It
never touches the cache, a model or TensorFlow: `/predict` and `/rollback` send a
message carrying a future and wait for the loop's answer.

Security, in order: the Host header must name this server or localhost (DNS
rebinding); state-changing routes take only application/json; a configured bearer
token is required (constant-time compare) by every route that changes or costs
anything; uploads are capped while they stream in; no CORS headers are ever sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from ecosight_daemon.artifacts import version_files as files
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.inbox import Message, RetrainRequested, Rollback
from ecosight_daemon.daemon.prometheus import CONTENT_TYPE, DaemonMetrics
from ecosight_daemon.daemon.status import HEARTBEAT_S
from ecosight_daemon.daemon.trigger_policy import HTTP_REASON_PREFIX
from ecosight_daemon.http.bodies import (
    MAX_JSON_BYTES,
    BodyTooLarge,
    BodyTooSlow,
    discard,
    json_object,
    spooled_upload,
)
from ecosight_daemon.http.dashboard import (
    detections_fragment,
    detections_page,
    gate_fragment,
    history_fragment,
    history_page,
    render_page,
    status_fragment,
    status_page,
    training_page,
)
from ecosight_daemon.http.review_routes import add_review_routes
from ecosight_daemon.http.reviewer_credentials import ReviewerCredentials
from ecosight_daemon.http.snippet_responses import SNIPPET_NAMES, snippet_response
from ecosight_daemon.versions.registry import VERSION_PATTERN, ModelRegistry

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
UNHEALTHY_AFTER_S = 5 * HEARTBEAT_S  # no status update for this long: the loop is not turning
REPLY_TIMEOUT_S = 120.0
PREDICT_RETRY_AFTER_S = 5
MAX_EVENT_STREAMS = 32  # dashboards open at once; each is one connection held open
SSE_POLL_S = 0.25
SSE_KEEP_ALIVE_S = 15.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The pages load nothing from elsewhere and run only their own script.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class DaemonPort(Protocol):
    """What the server may ask of the daemon."""

    def snapshot(self) -> dict[str, Any]: ...
    def post(self, message: Message) -> None: ...
    def reserve_prediction(self) -> bool: ...
    def release_prediction(self) -> None: ...
    def predict(self, upload: IO[bytes]) -> Future[dict[str, Any]]: ...


@dataclass(frozen=True)
class ApiSettings:
    host: str
    port: int
    token: str | None  # None: no token configured (loopback only)
    models_dir: Any  # Path
    max_upload_bytes: int
    body_timeout_s: float = 30.0
    recordings_dir: Path | None = None  # where detections' snippets are cut from
    reviewer_tokens: dict[str, str] = field(default_factory=dict)  # token -> reviewer ([review] reviewers_file)
    decisions_per_minute: int = 60  # per reviewer


def health_problem(status: dict[str, Any], now: float) -> str | None:
    """Why the daemon is not healthy, or None: the loop turns and the watcher lives."""
    if not status:
        return "the daemon has not started its loop yet"
    if status.get("state") in ("stopping", "stopped"):
        return f"the daemon is {status['state']}"
    age = now - float(status.get("updated_at", 0))
    if age > UNHEALTHY_AFTER_S:
        return f"the main loop has not reported for {age:.0f} s; it may be stuck"
    if status.get("watcher") != "watching":
        return f"the file watcher is not running ({status.get('watcher_problem')}); rescans stand in"
    if status.get("storage_error"):
        return f"cannot write: {status['storage_error']}"
    return None


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {host, *LOOPBACK_NAMES}
    return names | {f"{name}:{port}" for name in names}


def build_app(daemon: DaemonPort, settings: ApiSettings, events: EventLog, metrics: DaemonMetrics) -> FastAPI:
    app = FastAPI(title="ecosight-daemon", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stopping = False
    app.state.event_streams = 0
    hosts = allowed_hosts(settings.host, settings.port)
    registry = ModelRegistry(settings.models_dir)

    @app.middleware("http")
    async def refuse_foreign_hosts(request: Request,
                                   call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "").lower() not in hosts:
            return JSONResponse({"error": "unknown Host header; use this server's configured address"}, 421)
        return await call_next(request)

    def refusal(request: Request, json_body: bool) -> JSONResponse | None:
        """Why this state-changing or costly request is refused, or None."""
        if json_body and request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send the body as application/json"}, 415)
        client = request.client.host if request.client else "an unknown address"
        if settings.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                logger.warning("refused %s %s from %s: no valid bearer token", request.method, request.url.path,
                               client)
                return JSONResponse({"error": "a valid bearer token is required (Authorization: Bearer ...)"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        logger.info("%s %s from %s%s", request.method, request.url.path, client,
                    " (authenticated)" if settings.token is not None else "")
        return None

    async def json_write(request: Request) -> dict[str, Any] | None | JSONResponse:
        """A write's small JSON object (None: not one), or the refusal to send back."""
        refused = refusal(request, json_body=True)
        if refused is not None:
            return refused
        return await json_body(request)

    async def review_write(request: Request) -> dict[str, Any] | None | JSONResponse:
        """As json_write, but the credential is the reviewer's (review_routes checks it)."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send the body as application/json"}, 415)
        return await json_body(request)

    async def json_body(request: Request) -> dict[str, Any] | None | JSONResponse:
        try:
            return await json_object(request, settings.body_timeout_s)
        except BodyTooLarge:
            return JSONResponse({"error": f"a JSON body of at most {MAX_JSON_BYTES} bytes"}, 413)
        except BodyTooSlow:
            return too_slow(settings.body_timeout_s)

    def page(name: str, fragment: str) -> HTMLResponse:
        return HTMLResponse(render_page(name, fragment, settings.token is not None),
                            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    def last_entry() -> dict[str, Any] | None:
        entries = registry.retraining_log()
        return entries[-1] if entries else None

    @app.get("/", response_class=HTMLResponse)
    def status_view() -> HTMLResponse:
        snapshot = daemon.snapshot()
        return page("status", status_page(snapshot, health_problem(snapshot, time.time())))

    @app.get("/training", response_class=HTMLResponse)
    def training_view() -> HTMLResponse:
        return page("training", training_page(last_entry()))

    @app.get("/history", response_class=HTMLResponse)
    def history_view(request: Request) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(registry.retraining_log())  # the API: every attempt, as `history --json`
        return page("history", history_page(registry.retraining_log(), registry.current_version()))

    @app.get("/fragments/{name}", response_class=HTMLResponse)
    def fragment(name: str) -> HTMLResponse:
        snapshot = daemon.snapshot()
        if name == "status":
            return HTMLResponse(status_fragment(snapshot, health_problem(snapshot, time.time())))
        if name == "gate":
            return HTMLResponse(gate_fragment(last_entry()))
        if name == "history":
            return HTMLResponse(history_fragment(registry.retraining_log(), registry.current_version()))
        if name == "detections":
            return HTMLResponse(detections_fragment(snapshot))
        return HTMLResponse("", 404)

    @app.get("/detections", response_class=HTMLResponse)
    def detections_view(request: Request) -> Response:
        snapshot = daemon.snapshot()
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse((snapshot.get("recordings") or {}).get("recent") or [])
        return page("detections", detections_page(snapshot))

    @app.get("/detections/{detection_id}/{name}")
    def detection_snippet(detection_id: int, name: str) -> Response:
        """A few seconds around a recent detection (one of those the status lists), cut on demand."""
        recordings = daemon.snapshot().get("recordings") or {}
        found = next((d for d in recordings.get("recent") or [] if d["detection_id"] == detection_id), None)
        if found is None or name not in SNIPPET_NAMES or settings.recordings_dir is None:
            return JSONResponse({"error": "no such recent detection"}, 404)
        root = settings.recordings_dir.resolve()
        path = (root / found["recording"]).resolve()
        if root not in path.parents:
            return JSONResponse({"error": "no such recent detection"}, 404)
        return snippet_response(path, float(found["peak_s"]), name)

    add_review_routes(app, daemon, page, review_write, _answer,
                      ReviewerCredentials(settings.token, settings.reviewer_tokens), settings.decisions_per_minute)

    @app.get("/status")
    def status() -> dict[str, Any]:
        snapshot = daemon.snapshot()
        problem = health_problem(snapshot, time.time())
        return {**snapshot, "running": bool(snapshot) and snapshot.get("state") != "stopped", "problem": problem}

    @app.get("/health")
    def health() -> JSONResponse:
        problem = health_problem(daemon.snapshot(), time.time())
        if problem is None:
            return JSONResponse({"healthy": True})
        return JSONResponse({"healthy": False, "reason": problem}, 503)

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
        return await _answer(reply)

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
        return await _answer(daemon.predict(upload))

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/events")
    async def event_stream(request: Request) -> Response:
        if app.state.event_streams >= MAX_EVENT_STREAMS:
            return JSONResponse({"error": f"{MAX_EVENT_STREAMS} event streams are open already; try again later"},
                                503, headers={"Retry-After": "30"})
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else max(0, events.last_number - 50)
        return StreamingResponse(_sse(app, events, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return app


def _version_metadata(registry: ModelRegistry, version: str) -> dict[str, Any] | None:
    if not VERSION_PATTERN.fullmatch(version):
        return None
    path = registry.version_dir(version) / files.METADATA
    try:
        metadata: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metadata


def too_slow(timeout_s: float) -> JSONResponse:
    return JSONResponse({"error": f"the request body stopped arriving (nothing for {timeout_s:g} s)"}, 408,
                        headers={"Connection": "close"})


async def _answer(reply: Future[dict[str, Any]]) -> JSONResponse:
    """The loop's answer: {"status": code, ...body}."""
    try:
        answer = await asyncio.wait_for(asyncio.wrap_future(reply), REPLY_TIMEOUT_S)
    except asyncio.TimeoutError:
        return JSONResponse({"error": "the daemon did not answer in time; see its log"}, 504)
    code = int(answer.pop("http_status", 200))
    return JSONResponse(answer, code)


async def _sse(app: FastAPI, events: EventLog, start: int) -> AsyncIterator[str]:
    """One subscriber's stream. It waits on the event loop (asyncio.sleep), never in a pool
    thread: 300 open streams each holding a thread left /health and /metrics 7 s to wait."""
    last = start
    quiet_since = time.monotonic()
    app.state.event_streams += 1  # counted while it runs: a stream never started holds nothing
    try:
        yield "retry: 2000\n\n"
        while not app.state.stopping:
            batch = events.after(last)
            if not batch:
                if time.monotonic() - quiet_since >= SSE_KEEP_ALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(SSE_POLL_S)
                continue
            quiet_since = time.monotonic()
            for event in batch:
                last = event.number
                yield f"id: {event.number}\nevent: {event.kind}\ndata: {json.dumps(event.as_dict())}\n\n"
    finally:
        app.state.event_streams -= 1
