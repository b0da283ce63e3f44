"""The daemon's HTTP side: the token and the socket at start (a problem stops the start
with exit 78 before YAMNet loads), the server once the loop is ready, and the answers
to the requests the loop itself must handle (`/predict`, `/rollback`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ecosight_daemon.config import Settings
from ecosight_daemon.daemon.events import EventLog
from ecosight_daemon.daemon.inbox import Predict, Rollback
from ecosight_daemon.daemon.prometheus import DaemonMetrics
from ecosight_daemon.errors import AudioDecodeError, EcosightError
from ecosight_daemon.http.routes import ApiSettings, DaemonPort, build_app
from ecosight_daemon.http.server import HttpServer, bind, read_token
from ecosight_daemon.models.predict import Predictor
from ecosight_daemon.models.registry import ModelRegistry
from ecosight_daemon.models.retrain import RetrainBusy
from ecosight_daemon.models.rollback import UnknownVersion, roll_back

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50_000_000  # /predict: at most this, and never more than [audio] max_file_mb


class HttpFrontEnd:
    def __init__(self, settings: Settings) -> None:
        http = settings.http
        token = read_token(http.token_file) if http.token_file != Path("") else None
        self._socket = bind(http.host, http.port)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{http.host}:{self.port}/"
        self._api = ApiSettings(http.host, self.port, token, settings.paths.models_dir,
                                min(MAX_UPLOAD_BYTES, int(settings.audio.max_file_mb * 1_000_000)))
        self._server: HttpServer | None = None

    def start(self, daemon: DaemonPort, events: EventLog, metrics: DaemonMetrics) -> None:
        self._server = HttpServer(build_app(daemon, self._api, events, metrics), self._socket)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        else:
            self._socket.close()


def answer_predict(message: Predict, predictor: Predictor | None) -> None:
    try:
        if predictor is None:
            raise EcosightError("the daemon is still starting; try again in a moment")
        result: dict[str, Any] = predictor.label(message.data)
    except AudioDecodeError as exc:
        result = {"http_status": 422, "error": str(exc)}
    except EcosightError as exc:
        result = {"http_status": 409, "error": str(exc)}
    except Exception as exc:  # a model error on one upload must not stop the loop
        logger.exception("predict failed")
        result = {"http_status": 500, "error": f"{type(exc).__name__}: {exc}"}
    message.reply.set_result(result)


def answer_rollback(message: Rollback, registry: ModelRegistry) -> None:
    try:
        previous, current = roll_back(registry, message.version)
        result: dict[str, Any] = {"current": current, "previous": previous}
    except UnknownVersion as exc:
        result = {"http_status": 404, "error": str(exc)}
    except (RetrainBusy, EcosightError) as exc:
        result = {"http_status": 409, "error": str(exc)}
    except OSError as exc:
        result = {"http_status": 500, "error": f"cannot write under models_dir: {exc}"}
    message.reply.set_result(result)
