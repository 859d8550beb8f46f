"""The request body limit of every route (API, logins, admin, Gradio's queue), enforced before
and while the body is read: an announced length over the limit is refused at once, and a body
that streams past the limit (chunked, or lying about its length) is cut off there."""

from __future__ import annotations

import json
from typing import Any

from assistant.http.identity import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised into the app when the body it reads passes the limit."""


def too_large_body(limit: int, setting: str = "server.max_body_bytes") -> bytes:
    """The 413 answer: an OpenAI-style error plus FastAPI's `detail`, so every client reads it."""
    message = (
        f"the request body is larger than the limit of {limit:,} bytes: send less "
        f"(the limit is {setting})"
    )
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": "body_too_large",
                "param": None,
            },
            "detail": message,
        }
    ).encode()


class BodyLimitMiddleware:
    """Refuses (413) any HTTP request whose body is over `limit` bytes, without reading it.
    `uploads` are (path prefix, limit) pairs of the routes that take files (document uploads),
    each limited by its own setting instead."""

    def __init__(self, app: ASGIApp, limit: int, uploads: tuple[tuple[str, int], ...] = ()) -> None:
        self.app = app
        self.default = limit
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit, setting = next(
            ((n, "retrieval.max_file_mb") for prefix, n in self.uploads if path.startswith(prefix)),
            (self.default, "server.max_body_bytes"),
        )
        await self._limited(scope, receive, send, limit, setting)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str
    ) -> None:
        announced = _content_length(scope)
        if announced is None:
            await _reply(
                send,
                400,
                json.dumps({"detail": "the Content-Length header is not a number"}).encode(),
            )
            return
        if announced > limit:
            await _reply(send, 413, too_large_body(limit, setting))
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app answers after the cut-off, the client gets the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _reply(send, 413, too_large_body(limit, setting))


def _content_length(scope: Scope) -> int | None:
    """The announced body length (0 when none is announced), None when it is not a number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return 0


async def _reply(send: Send, status: int, body: bytes) -> None:
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
