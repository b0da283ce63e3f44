"""Reading request bodies: capped (413), counted while they stream (a 200 MB body never
sits in memory), with a deadline on each piece (a client that stops sending mid-body is
answered 408 instead of holding its connection and its memory), and uploads spooled to
disk past SPOOL_IN_MEMORY_BYTES while they wait for their turn."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from fastapi import Request

MAX_JSON_BYTES = 16_384  # /retrain and /rollback take a few short fields
SPOOL_IN_MEMORY_BYTES = 1 << 20


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


async def json_object(request: Request, timeout_s: float) -> dict[str, Any] | None:
    """A small JSON object, or None; raises BodyTooLarge past MAX_JSON_BYTES, BodyTooSlow
    when no piece of it comes for `timeout_s`."""
    data = bytearray()
    async for chunk in _chunks(request, MAX_JSON_BYTES, timeout_s):
        data += chunk
    try:
        body = json.loads(bytes(data) or b"{}")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    return body if isinstance(body, dict) else None


async def spooled_upload(request: Request, limit: int, timeout_s: float) -> IO[bytes]:
    """The body in a temporary file (in memory while small), at its start; the caller
    closes it. Raises BodyTooLarge past `limit`, BodyTooSlow when no piece of it comes
    for `timeout_s`."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, prefix="ecosight-upload-")
    try:
        async for chunk in _chunks(request, limit, timeout_s):
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def discard(request: Request, limit: int, timeout_s: float) -> None:
    """Read a body and throw it away (nothing kept): a client refused before its upload was
    read still gets the answer, not a connection reset while it sends."""
    try:
        async for _ in _chunks(request, limit, timeout_s):
            pass
    except (BodyTooLarge, BodyTooSlow):
        pass


async def _chunks(request: Request, limit: int, timeout_s: float) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    size = 0
    pieces = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(pieces.__anext__(), timeout_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BodyTooSlow from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        yield chunk
