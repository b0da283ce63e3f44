"""What the HTTP side is given: its settings, and the daemon as a port it may ask things of."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from ecosight_daemon.daemon.inbox import Message


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
    priority_class: str = "gun_shot"  # the class the Detections page opens on
