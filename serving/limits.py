"""The request-body size limit, enforced before a byte of the body is read.

A body is parsed as a whole (JSON, then validation) on the event loop, so one
huge body delays every other request, ``/health`` included, and its errors grow
with it. The limit is checked on ``Content-Length`` before the app runs; a body
sent without one (chunked) is counted as the app reads it, and reading stops at
the chunk that passes the limit. A pure ASGI middleware rather than Starlette's
``BaseHTTPMiddleware``: on the hot path it costs one scan of the header list.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """413; an ``HTTPException`` so that FastAPI's body reading lets it through to the usual JSON handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_detail(max_bytes))


def too_large_detail(max_bytes: int) -> str:
    return f"the request body is larger than the limit of {max_bytes} bytes"


class BodySizeLimit:
    """Answer 413 to any request whose body is longer than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            # The server delivers exactly Content-Length bytes: checking the header is enough.
            if declared > self.max_bytes:
                # Answered without reading: the server discards the body as it arrives.
                response = JSONResponse({"detail": too_large_detail(self.max_bytes)}, status_code=413)
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, _counting(receive, self.max_bytes), send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, or None when there is none (chunked, or no body) or it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # servers refuse these; if one did not, the body is counted instead
    return None


def _counting(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` instead of handing over the chunk that passes ``max_bytes``."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
        return message

    return counted
