"""The few ASGI pieces every HTTP-facing part of the library shares (the destination's
receiver, the ESP webhook routes, the tracking endpoints): read a request body under a size
limit, look up a header, write a whole answer, acknowledge a lifespan scope. No framework:
an ASGI application here is a plain ``async def app(scope, receive, send)``, mountable in
Starlette/FastAPI or served by any ASGI server (``uvicorn``, the ``server`` extra).

Guarantees: :func:`read_body` never holds more than ``limit`` bytes of a body in memory and
says so with :class:`BodyTooLarge` (answer ``413``); with a :class:`BodyBudget`, the bodies
being read at once by one application never hold more than its ``max_bytes`` together
(:class:`BodiesBusy`: answer ``503``), and with a ``deadline`` a body that does not arrive
whole in time is refused (:class:`BodyTimeout`: answer ``408``), so that unfinished
bodies cannot pile up; :func:`respond` always sends exactly one ``http.response.start``
and one final ``http.response.body``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from selligent_segment._errors import ConfigurationError

__all__ = [
    "DEFAULT_BODY_DEADLINE",
    "DEFAULT_MAX_BODIES_BYTES",
    "ASGIApp",
    "BodiesBusy",
    "BodyBudget",
    "BodyTimeout",
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


#: What the bodies one application reads at once may hold together (bytes): 64 MiB.
DEFAULT_MAX_BODIES_BYTES = 64 * 1024 * 1024
#: Seconds a request body may take to arrive whole.
DEFAULT_BODY_DEADLINE = 30.0


class BodiesBusy(Exception):
    """The bodies being read at once already hold their :class:`BodyBudget` (answer
    ``503``: the sender tries again)."""


class BodyTimeout(Exception):
    """The body did not arrive whole within the deadline given to :func:`read_body`
    (answer ``408``)."""


class BodyBudget:
    """The bytes all the bodies one application is reading at once may hold together:
    ``max_bytes``. :func:`read_body` takes each chunk's bytes as it arrives and gives
    them back when it fails; the caller gives a body's bytes back (:meth:`give`) once it
    is done with it. For one event loop (an ASGI server's): no lock."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.used = 0

    @classmethod
    def for_bodies(cls, max_bytes: int | None, largest: int, largest_name: str) -> BodyBudget:
        """The budget of an application whose bodies are at most ``largest`` bytes (its
        setting ``largest_name``): ``max_bytes``, or by default
        :data:`DEFAULT_MAX_BODIES_BYTES` or ``largest`` when that is more; a
        ``max_bytes`` below ``largest`` raises ConfigurationError (``max_bodies_bytes``)."""
        if max_bytes is None:
            return cls(max(DEFAULT_MAX_BODIES_BYTES, largest))
        if max_bytes < largest:
            raise ConfigurationError(
                "max_bodies_bytes",
                f"must be at least {largest_name} ({largest:,}), not {max_bytes:,}",
            )
        return cls(max_bytes)

    def take(self, n: int) -> bool:
        """Take ``n`` bytes; False (nothing taken) when they would pass ``max_bytes``."""
        if self.used + n > self.max_bytes:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken."""
        self.used -= n


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


async def read_body(
    receive: Receive,
    limit: int,
    *,
    budget: BodyBudget | None = None,
    deadline: float | None = None,
) -> bytes:
    """The whole request body; raises :class:`BodyTooLarge` as soon as more than ``limit``
    bytes have arrived, :class:`ClientGone` if the client disconnects first. With a
    ``budget``, each chunk's bytes are taken from it (:class:`BodiesBusy` when they do
    not fit; the bytes of a body returned stay taken until the caller gives them back);
    with a ``deadline`` (seconds), :class:`BodyTimeout` when the body is not whole by
    then. Whatever it raises, it has given back what it took."""
    try:
        return await asyncio.wait_for(_read_body(receive, limit, budget), deadline)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise BodyTimeout from None


async def _read_body(receive: Receive, limit: int, budget: BodyBudget | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                if size + len(chunk) > limit:
                    raise BodyTooLarge(limit)
                if budget is not None and not budget.take(len(chunk)):
                    raise BodiesBusy
                size += len(chunk)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except BaseException:  # a refusal, the deadline (a cancellation): give back what it took
        if budget is not None:
            budget.give(size)
        raise


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
