"""The shared ASGI pieces (_asgi.py) and the loopback server for tests (serve_asgi)."""

from __future__ import annotations

import http.client
import urllib.parse

from selligent_segment._asgi import BodyTooLarge, Receive, Scope, Send, header, read_body, respond


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
