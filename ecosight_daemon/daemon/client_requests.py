"""Answers to what a client asked through the HTTP server: every outcome, an error included,
becomes the reply, and a reply for a client that has gone is dropped. `/rollback` and
`/review/{id}` are answered on the loop (they change what the loop serves, and the cache
has one writer); `/predict` on its own worker
(predictions.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ecosight_daemon.daemon.inbox import ReviewDecision, Rollback
from ecosight_daemon.daemon.storage_trouble import STORAGE_ERRORS
from ecosight_daemon.errors import EcosightError
from ecosight_daemon.review.queue import BadDecision, ReviewQueue, UnknownItem
from ecosight_daemon.versions.registry import ModelRegistry
from ecosight_daemon.versions.retrain_lock import RetrainBusy
from ecosight_daemon.versions.rollback import UnknownVersion, roll_back

logger = logging.getLogger(__name__)


def deliver(reply: Future[dict[str, Any]], result: dict[str, Any]) -> None:
    """Set the answer, unless the client has gone (its request timed out and cancelled the
    future): then the answer is dropped, never raised into the loop."""
    if not reply.set_running_or_notify_cancel():
        logger.info("a client left before its answer was ready; the answer is dropped")
        return
    reply.set_result(result)


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
    deliver(message.reply, result)


def answer_review(message: ReviewDecision, queue: ReviewQueue | None, publish: Callable[[], None]) -> None:
    """Decided (the clip written or removed), the status published (so the page's next GET
    sees it), then answered with the item, the reviewer's next item and the round's progress."""
    if queue is None:
        deliver(message.reply, {"http_status": 503, "error": "the review queue is not open yet; try again"})
        return
    try:
        if message.verdict == "undo":
            result = queue.undo(message.item_id, message.reviewer)
        else:
            result = queue.decide(message.item_id, message.reviewer, message.verdict, message.label)
        result["next"] = queue.next_for(message.reviewer)
        result["progress"] = queue.progress()
        publish()
    except (UnknownItem, BadDecision) as exc:
        result = {"http_status": exc.http_status, "error": str(exc)}
    except Exception as exc:  # every request is answered
        logger.exception("review: the decision on item %s failed", message.item_id)
        deliver(message.reply, {"http_status": 500, "error": f"the decision could not be recorded ({exc}); see "
                                                              "the daemon's log"})
        if isinstance(exc, STORAGE_ERRORS):
            raise  # a full or failing disk: the loop's storage trouble handling takes it from here
        return
    deliver(message.reply, result)
