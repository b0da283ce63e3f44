"""The daemon's HTTP side: the token and the socket at start (a problem stops the start
with exit 78 before YAMNet loads), then the server once the loop is ready. The composer
(cli) hands `HttpFrontEnd` to the daemon, which knows it only as a `FrontEnd`."""

from __future__ import annotations

import logging
from pathlib import Path

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.http.connections import limited_protocol
from ecosight_daemon.http.reviewer_credentials import read_reviewer_tokens
from ecosight_daemon.http.routes import ApiSettings, DaemonPort, build_app
from ecosight_daemon.http.server import HttpServer, bind
from ecosight_daemon.util.secret_file import read_secret

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50_000_000  # /predict: at most this, and never more than [audio] max_file_mb


class HttpFrontEnd:
    def __init__(self, settings: Settings) -> None:
        http = settings.http
        token = read_secret(http.token_file, "http.token_file") if http.token_file != Path("") else None
        self._socket = bind(http.host, http.port)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{http.host}:{self.port}/"
        self._api = ApiSettings(http.host, self.port, token, settings.paths.models_dir,
                                min(MAX_UPLOAD_BYTES, int(settings.audio.max_file_mb * 1_000_000)),
                                http.body_timeout_s, settings.detection.recordings_dir
                                if settings.detection.recordings_dir != Path("") else None,
                                read_reviewer_tokens(settings.review.reviewers_file)
                                if settings.review.reviewers_file != Path("") else {},
                                settings.review.decisions_per_minute, settings.training.priority_class)
        self._protocol = limited_protocol(http.max_connections, http.request_timeout_s)
        self._server: HttpServer | None = None

    def start(self, daemon: DaemonPort, events: EventLog, metrics: DaemonMetrics) -> None:
        self._server = HttpServer(build_app(daemon, self._api, events, metrics), self._socket, self._protocol)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        else:
            self._socket.close()
