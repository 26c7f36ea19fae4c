"""The few ASGI pieces every HTTP-facing part of the library shares (the destination's
receiver, the ESP webhook routes, the tracking endpoints): read a request body under a size
limit, look up a header, write a whole answer, acknowledge a lifespan scope. No framework:
an ASGI application here is a plain ``async def app(scope, receive, send)``, mountable in
Starlette/FastAPI or served by any ASGI server (``uvicorn``, the ``server`` extra).

Guarantees: :func:`read_body` never holds more than ``limit`` bytes of a body in memory and
says so with :class:`BodyTooLarge` (answer ``413``); :func:`respond` always sends exactly
one ``http.response.start`` and one final ``http.response.body``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "ASGIApp",
    "BodyTooLarge",
    "Receive",
    "Scope",
    "Send",
    "header",
    "lifespan",
    "read_body",
    "respond",
    "respond_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is over the limit given to :func:`read_body` (answer ``413``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit:,} bytes")
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before the whole body arrived."""


def header(scope: Scope, name: str) -> str | None:
    """The first value of header ``name`` (any case) in ``scope``, decoded as Latin-1
    (as HTTP/1.1 defines), or ``None``."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


async def lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge an ASGI ``lifespan`` scope: answer startup and shutdown (nothing to
    start or stop), and return after shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises :class:`BodyTooLarge` as soon as more than ``limit``
    bytes have arrived, :class:`ClientGone` if the client disconnects first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send one whole answer: ``status``, ``Content-Type``, ``Content-Length``, the extra
    ``headers`` and ``body``."""
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, body: bytes, *, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """:func:`respond` with an already encoded JSON body."""
    await respond(send, status, body, content_type="application/json", headers=headers)
