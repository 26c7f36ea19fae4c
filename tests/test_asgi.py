"""The shared ASGI pieces (_asgi.py) and the loopback server for tests (serve_asgi)."""

from __future__ import annotations

import asyncio
import http.client
import urllib.parse
from typing import Any

import pytest

from selligent_segment._asgi import (
    BodiesBusy,
    BodyBudget,
    BodyTimeout,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    respond,
)


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    try:
        body = await read_body(receive, limit=10)
    except BodyTooLarge as exc:
        await respond(send, 413, str(exc).encode())
        return
    name = header(scope, "X-Name") or "-"
    await respond(send, 200, name.encode() + b":" + body, headers=[("X-Seen", "yes")])


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read(), answer.getheader("x-seen")
    finally:
        conn.close()


def test_a_body_header_and_answer_round_trip_over_loopback() -> None:
    from selligent_segment.testing._asgi_server import serve_asgi

    with serve_asgi(_echo) as url:
        assert _post(url, b"hello", {"x-name": "ada"}) == (200, b"ada:hello", "yes")
        status, body, _ = _post(url, b"x" * 11, {})
    assert status == 413
    assert body == b"request body over 10 bytes"


# -- many bodies at once: the budget and the deadline ----------------------------------------


def _dripping(first: bytes, rest: asyncio.Event | None = None) -> Receive:
    """A receive() giving ``first`` (more to come), then, once ``rest`` is set, the end;
    without ``rest``, never anything more."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        if rest is None:
            await asyncio.Event().wait()
        else:
            await rest.wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


def test_bodies_read_at_once_stay_within_their_budget() -> None:
    """Found by a review: 40 unfinished 8 MiB bodies held 449 MiB of the destination's
    memory. A body whose bytes would take the bodies being read past the budget is
    refused (BodiesBusy: answer 503); what a refused or finished body took is given back."""
    budget = BodyBudget(100)

    async def scenario() -> None:
        rest = asyncio.Event()
        first = asyncio.create_task(read_body(_dripping(b"a" * 60, rest), 100, budget=budget))
        while budget.used < 60:  # the first body's bytes have arrived
            await asyncio.sleep(0)
        with pytest.raises(BodiesBusy):
            await read_body(_dripping(b"b" * 60, rest), 100, budget=budget)
        assert budget.used == 60  # the refused one gave back what it took
        rest.set()
        assert await first == b"a" * 60
        assert budget.used == 60  # held until the caller is done with the body
        budget.give(60)
        done = asyncio.Event()
        done.set()
        assert await read_body(_dripping(b"c" * 60, done), 100, budget=budget) == b"c" * 60

    asyncio.run(scenario())


def test_a_body_not_read_within_its_deadline_is_refused_and_gives_its_bytes_back() -> None:
    budget = BodyBudget(100)

    async def scenario() -> None:
        with pytest.raises(BodyTimeout):
            await read_body(_dripping(b"a" * 60), 100, budget=budget, deadline=1e-6)
        assert budget.used == 0

    asyncio.run(scenario())


def test_a_body_budget_is_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BodyBudget(0)
