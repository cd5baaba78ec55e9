"""Request bodies bounded while they arrive: an ASGI middleware counting the bytes the server hands the app.

A declared Content-Length over the limit is refused at once; a body without one (chunked transfer encoding)
is counted chunk by chunk as the app reads it, and refused with 413 as soon as the running total passes the
limit, so no more of it is read and it is never held whole.
"""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """The request body passed the limit: a 413, and the connection closed, since the rest of the body is never
    read (the server would otherwise read it to its end, to keep the connection alive)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit:,} bytes", headers={"connection": "close"})


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, whatever its encoding."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:  # read outside the routes' error handling (which answers 413 itself)
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        refusal = BodyTooLarge(self.limit)
        response = JSONResponse({"detail": refusal.detail}, status_code=413, headers=refusal.headers)
        await response(scope, receive, send)
