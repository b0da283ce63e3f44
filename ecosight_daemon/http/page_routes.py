"""The dashboard's pages (Status, Training, History, Detections), their live fragments,
and the Detections page's snippets cut on demand."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from ecosight_daemon.http.api_settings import ApiSettings, DaemonPort
from ecosight_daemon.http.dashboard import (
    gate_fragment,
    history_fragment,
    history_page,
    status_fragment,
    status_page,
    training_page,
)
from ecosight_daemon.http.detections_page import detections_fragment, detections_page
from ecosight_daemon.http.guards import Guards
from ecosight_daemon.http.health import health_problem
from ecosight_daemon.http.snippet_responses import SNIPPET_NAMES, snippet_response
from ecosight_daemon.versions.registry import ModelRegistry


def add_page_routes(app: FastAPI, daemon: DaemonPort, settings: ApiSettings, guards: Guards,
                    registry: ModelRegistry) -> None:
    page = guards.page

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
    def fragment(name: str, request: Request) -> HTMLResponse:
        snapshot = daemon.snapshot()
        if name == "status":
            return HTMLResponse(status_fragment(snapshot, health_problem(snapshot, time.time())))
        if name == "gate":
            return HTMLResponse(gate_fragment(last_entry()))
        if name == "history":
            return HTMLResponse(history_fragment(registry.retraining_log(), registry.current_version()))
        if name == "detections":
            return HTMLResponse(detections_fragment(snapshot, request.query_params, settings.priority_class))
        return HTMLResponse("", 404)

    @app.get("/detections", response_class=HTMLResponse)
    def detections_view(request: Request) -> Response:
        snapshot = daemon.snapshot()
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse((snapshot.get("recordings") or {}).get("recent") or [])
        return page("detections", detections_page(snapshot, request.query_params, settings.priority_class))

    @app.get("/detections/{detection_id}/{name}")
    def detection_snippet(detection_id: int, name: str) -> Response:
        """A few seconds around a recent detection (one of those the status lists), cut on demand."""
        recordings = daemon.snapshot().get("recordings") or {}
        shown = [*(recordings.get("recent") or []), *(d for recent in (recordings.get("recent_by_class") or {})
                                                     .values() for d in recent)]
        found = next((d for d in shown if d["detection_id"] == detection_id), None)
        if found is None or name not in SNIPPET_NAMES or settings.recordings_dir is None:
            return JSONResponse({"error": "no such recent detection"}, 404)
        root = settings.recordings_dir.resolve()
        path = (root / found["recording"]).resolve()
        if root not in path.parents:
            return JSONResponse({"error": "no such recent detection"}, 404)
        return snippet_response(path, float(found["peak_s"]), name)
