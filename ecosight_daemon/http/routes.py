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

from fastapi import FastAPI

from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.http.api_settings import ApiSettings, DaemonPort
from ecosight_daemon.http.guards import Guards, answer, refuse_foreign_hosts
from ecosight_daemon.http.model_routes import add_model_routes
from ecosight_daemon.http.page_routes import add_page_routes
from ecosight_daemon.http.review_routes import add_review_routes
from ecosight_daemon.http.reviewer_credentials import ReviewerCredentials
from ecosight_daemon.http.service_routes import add_service_routes
from ecosight_daemon.versions.registry import ModelRegistry

__all__ = ["ApiSettings", "DaemonPort", "build_app"]


def build_app(daemon: DaemonPort, settings: ApiSettings, events: EventLog, metrics: DaemonMetrics) -> FastAPI:
    """The app: the Host check first, then one group of routes per page or concern."""
    app = FastAPI(title="ecosight-daemon", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stopping = False
    app.state.event_streams = 0
    refuse_foreign_hosts(app, settings.host, settings.port)
    guards = Guards(settings)
    registry = ModelRegistry(settings.models_dir)
    add_page_routes(app, daemon, settings, guards, registry)
    add_review_routes(app, daemon, guards.page, guards.review_write, answer,
                      ReviewerCredentials(settings.token, settings.reviewer_tokens), settings.decisions_per_minute)
    add_model_routes(app, daemon, settings, guards, registry)
    add_service_routes(app, daemon, events, metrics)
    return app
