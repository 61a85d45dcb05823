"""The outermost ASGI layer: the bearer key is checked first, then the body size, before anything is parsed.

FastAPI reads and parses a JSON body before it runs route dependencies, so a key check written as a
dependency comes too late (a 50 MB body without a key used to be read and parsed before the 401). This
middleware answers 401 from the headers alone, 413 from ``Content-Length`` alone, and otherwise reads
the body itself, counting bytes as they arrive and answering 413 as soon as the limit is passed; the
application then gets the (bounded) body replayed.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from refusalkit.serve.errors import APIError, error_bytes, too_large, unauthorized

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_error(send: Send, err: APIError, *, close: bool = False) -> None:
    """Send ``err`` as a complete JSON response; ``close`` asks the server to drop the connection (the
    client may still be sending a body nobody will read)."""
    body = error_bytes(err)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bearer_ok(headers: Iterable[tuple[bytes, bytes]], key: bytes) -> APIError | None:
    """Return None when the ``Authorization`` header carries ``Bearer KEY``, else the 401 to send."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if not values:
        return unauthorized("missing API key: send the header 'Authorization: Bearer YOUR_KEY'")
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return unauthorized("the Authorization header must use the Bearer scheme: 'Authorization: Bearer YOUR_KEY'")
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
    if len(values) > 1 or not hmac.compare_digest(token.strip(), key):
        return unauthorized("invalid API key")
    return None


class GuardMiddleware:
    """Check the key, then the body size, for every HTTP request except ``open_paths``."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        api_key: str | None,
        max_body_bytes: int,
        open_paths: frozenset[str] = frozenset({"/health"}),
    ):
        self.app = app
        self.key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if self.key is not None and scope.get("path") not in self.open_paths:
            if (err := bearer_ok(headers, self.key)) is not None:
                await send_error(send, err, close=True)
                return
        lengths = [v for k, v in headers if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                await send_error(send, APIError(400, "Content-Length is not an integer"), close=True)
                return
            if declared > self.max_body_bytes:
                await send_error(send, too_large(self.max_body_bytes), close=True)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # a chunked body, or one longer than it said
                await send_error(send, too_large(self.max_body_bytes), close=True)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as streaming responses do

        await self.app(scope, replay, send)
