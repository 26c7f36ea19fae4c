"""Calling an ASGI application in process, without a server: one request's messages in,
its status and body out (for what a loopback server cannot stage exactly: bodies half
read, two requests at one instant)."""

from __future__ import annotations

import asyncio
from typing import Any


async def request(
    app: Any,
    scope: dict[str, Any],
    messages: list[dict[str, Any]],
    waiting: asyncio.Event | None = None,
) -> tuple[int, bytes]:
    """One request to ``app``: ``messages`` received in turn, then nothing more ever
    (``waiting`` is set then: every message given has been read); the status and body
    it answered."""
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        if waiting is not None:
            waiting.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer.get("body", b"")


def call_asgi(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[int, bytes]:
    """:func:`request` in an event loop of its own."""
    return asyncio.run(request(app, scope, messages))


def chunk(body: bytes, *, more: bool = False) -> dict[str, Any]:
    """An ``http.request`` message: ``body``, and whether more of it follows."""
    return {"type": "http.request", "body": body, "more_body": more}


def post_scope(path: str, headers: dict[str, str], root_path: str = "") -> dict[str, Any]:
    """The scope of a ``POST`` to ``path`` with ``headers``."""
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": root_path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def beside_a_held_body(
    app: Any, held: dict[str, Any], scope: dict[str, Any], messages: list[dict[str, Any]]
) -> tuple[int, bytes]:
    """A request to ``app`` made while another (``held``: its scope) has sent its first
    ``chunk`` of body and nothing more: the second request's answer (the first is then
    abandoned)."""
    waiting = asyncio.Event()
    first = asyncio.create_task(request(app, held, [chunk(b"[" * 60, more=True)], waiting))
    await waiting.wait()
    try:
        return await request(app, scope, messages)
    finally:
        first.cancel()
