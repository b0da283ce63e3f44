"""The HTTP side's guards, in the order a request meets them: the Host header must name this
server or localhost (DNS rebinding); a state-changing route takes only application/json; a
configured bearer token is required (constant-time compare) by every route that changes or
costs anything; bodies are capped and must keep arriving. Pages carry a strict policy."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from ecosight_daemon.http.api_settings import ApiSettings
from ecosight_daemon.http.bodies import MAX_JSON_BYTES, BodyTooLarge, BodyTooSlow, json_object
from ecosight_daemon.http.dashboard import render_page

logger = logging.getLogger(__name__)
REPLY_TIMEOUT_S = 120.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The pages load nothing from elsewhere and run only their own script.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {host, *LOOPBACK_NAMES}
    return names | {f"{name}:{port}" for name in names}


def refuse_foreign_hosts(app: FastAPI, host: str, port: int) -> None:
    hosts = allowed_hosts(host, port)

    @app.middleware("http")
    async def check_host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "").lower() not in hosts:
            return JSONResponse({"error": "unknown Host header; use this server's configured address"}, 421)
        return await call_next(request)


class Guards:
    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings

    def refusal(self, request: Request, json_body: bool) -> JSONResponse | None:
        """Why this state-changing or costly request is refused, or None."""
        if json_body and request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send the body as application/json"}, 415)
        client = request.client.host if request.client else "an unknown address"
        if self._settings.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._settings.token}".encode()):
                logger.warning("refused %s %s from %s: no valid bearer token", request.method, request.url.path,
                               client)
                return JSONResponse({"error": "a valid bearer token is required (Authorization: Bearer ...)"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        logger.info("%s %s from %s%s", request.method, request.url.path, client,
                    " (authenticated)" if self._settings.token is not None else "")
        return None

    async def json_write(self, request: Request) -> dict[str, Any] | None | JSONResponse:
        """A write's small JSON object (None: not one), or the refusal to send back."""
        refused = self.refusal(request, json_body=True)
        if refused is not None:
            return refused
        return await self.json_body(request)

    async def review_write(self, request: Request) -> dict[str, Any] | None | JSONResponse:
        """As json_write, but the credential is the reviewer's (review_routes checks it)."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send the body as application/json"}, 415)
        return await self.json_body(request)

    async def json_body(self, request: Request) -> dict[str, Any] | None | JSONResponse:
        try:
            return await json_object(request, self._settings.body_timeout_s)
        except BodyTooLarge:
            return JSONResponse({"error": f"a JSON body of at most {MAX_JSON_BYTES} bytes"}, 413)
        except BodyTooSlow:
            return too_slow(self._settings.body_timeout_s)

    def page(self, name: str, fragment: str) -> HTMLResponse:
        return HTMLResponse(render_page(name, fragment, self._settings.token is not None),
                            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})


def too_slow(timeout_s: float) -> JSONResponse:
    return JSONResponse({"error": f"the request body stopped arriving (nothing for {timeout_s:g} s)"}, 408,
                        headers={"Connection": "close"})


async def answer(reply: Future[dict[str, Any]]) -> JSONResponse:
    """The loop's answer: {"status": code, ...body}."""
    try:
        answer = await asyncio.wait_for(asyncio.wrap_future(reply), REPLY_TIMEOUT_S)
    except asyncio.TimeoutError:
        return JSONResponse({"error": "the daemon did not answer in time; see its log"}, 504)
    code = int(answer.pop("http_status", 200))
    return JSONResponse(answer, code)
