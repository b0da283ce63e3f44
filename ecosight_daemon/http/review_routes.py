"""The review queue over HTTP: `GET /review` (the Review page, or the queue as JSON with the
next item for `?reviewer=`), `GET /review/{id}/audio.wav|spectrogram.png` (the item's
snippet, cut on demand) and `POST /review/{id}` (a decision: the loop records it, writes or
removes the clip, and answers with the item's outcome and the reviewer's next item).

A decision needs a reviewer's credential (http/reviewer_credentials.py) and is rate-limited
per reviewer; an id outside SQLite's range is simply not an item."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from ecosight_daemon.daemon.inbox import ReviewDecision
from ecosight_daemon.http.rate_limit import RateLimit
from ecosight_daemon.http.review_page import review_page
from ecosight_daemon.http.reviewer_credentials import Refused, ReviewerCredentials
from ecosight_daemon.http.snippet_responses import SNIPPET_NAMES, snippet_response

logger = logging.getLogger(__name__)
VERDICTS = ("label", "uncertain", "skip", "undo")
DEFAULT_REVIEWER = "dashboard"
MAX_ITEM_ID = 2**62  # ids are SQLite integers; a larger number names no item
DECISION_BURST = 10


def items_shown(review: dict[str, Any]) -> list[dict[str, Any]]:
    return [*review.get("pending", []), *review.get("disagreed", []), *review.get("recent", [])]


def next_for(review: dict[str, Any], reviewer: str) -> dict[str, Any] | None:
    """The oldest pending item on which this reviewer has no standing decision (a skip included)."""
    for item in review.get("pending", []):
        if not any(d["reviewer"] == reviewer for d in item.get("standing", [])):
            return dict(item)
    return None


def add_review_routes(app: FastAPI, daemon: Any, page: Callable[[str, str], HTMLResponse],
                      json_write: Callable[[Request], Awaitable[dict[str, Any] | None | JSONResponse]],
                      answer: Callable[[Future[dict[str, Any]]], Awaitable[JSONResponse]],
                      credentials: ReviewerCredentials, decisions_per_minute: int) -> None:
    limit = RateLimit(decisions_per_minute / 60.0, DECISION_BURST)

    @app.get("/review", response_class=HTMLResponse)
    def review_view(request: Request, reviewer: str = DEFAULT_REVIEWER) -> Response:
        review = daemon.snapshot().get("review")
        if "text/html" in request.headers.get("accept", ""):
            return page("review", review_page())
        if review is None:
            return JSONResponse({"error": "the review queue is not open yet; try again"}, 503)
        return JSONResponse({**review, "next": next_for(review, reviewer)})

    @app.get("/review/{item_id}/{name}")
    def review_snippet(item_id: int, name: str) -> Response:
        review = daemon.snapshot().get("review") or {}
        found = next((i for i in items_shown(review) if i["id"] == item_id), None)
        if found is None or name not in SNIPPET_NAMES:
            return JSONResponse({"error": "no such review item in the queue"}, 404)
        return snippet_response(Path(found["path"]), float(found["centre_s"]), name)

    @app.post("/review/{item_id}")
    async def review_decide(item_id: int, request: Request) -> JSONResponse:
        body = await json_write(request)
        if isinstance(body, JSONResponse):
            return body
        body = body or {}
        verdict = body.get("verdict", "label" if "label" in body else None)
        claimed = body.get("reviewer")
        label = body.get("label")
        label_ok = label is None or isinstance(label, str)
        if verdict not in VERDICTS or not isinstance(claimed, (str, type(None))) or not label_ok:
            return JSONResponse({"error": 'send {"label": "gun_shot", "reviewer": "ana"} (the class it really is, '
                                          'the background class included), or {"verdict": "uncertain" | "skip" | '
                                          '"undo", "reviewer": "ana"}'}, 422)
        reviewer = credentials.reviewer(request.headers.get("authorization", ""), claimed, DEFAULT_REVIEWER)
        if isinstance(reviewer, Refused):
            client = request.client.host if request.client else "an unknown address"
            logger.warning("refused a review decision on item %s from %s: %s", str(item_id)[:20], client,
                           reviewer.error)
            return JSONResponse({"error": reviewer.error}, reviewer.status, headers={"WWW-Authenticate": "Bearer"}
                                if reviewer.status == 401 else None)
        wait_s = limit.wait_s(reviewer)
        if wait_s > 0:
            return JSONResponse({"error": f"{reviewer} sent more than {decisions_per_minute} decisions a minute; "
                                          f"wait {wait_s:.0f} s"}, 429,
                                headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
        if not 0 < item_id <= MAX_ITEM_ID:
            return JSONResponse({"error": f"no review item {str(item_id)[:24]}; GET /review lists the queue"}, 404)
        reply: Future[dict[str, Any]] = Future()
        daemon.post(ReviewDecision(item_id, reviewer, verdict, label, reply))
        return await answer(reply)
