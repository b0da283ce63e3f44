"""The daemon's service routes: `/status`, `/health`, `/metrics` and `/events` (server-sent
events, each stream waiting on the event loop, at most MAX_EVENT_STREAMS at once)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.prometheus import CONTENT_TYPE, DaemonMetrics
from ecosight_daemon.http.api_settings import DaemonPort
from ecosight_daemon.http.health import health_problem

MAX_EVENT_STREAMS = 32  # dashboards open at once; each is one connection held open
SSE_POLL_S = 0.25
SSE_KEEP_ALIVE_S = 15.0

def add_service_routes(app: FastAPI, daemon: DaemonPort, events: EventLog, metrics: DaemonMetrics) -> None:
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
