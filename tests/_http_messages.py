"""HTTP messages in the tests: a header message's whole state, comparable (for the tests
that prove a quick way of reading an HTTP answer equal to ``http.client``'s own), and one
request read off a raw socket (for the loopback servers that record requests byte for
byte)."""

from __future__ import annotations

import re
import socket
from typing import Any

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")


def read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The next request on ``conn``, ``buffer`` being what was received of it already: its
    head (up to the blank line, which is left out), its body (``Content-Length`` bytes)
    and whatever came after it; ``None`` when the connection ends before a whole one."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    found = _CONTENT_LENGTH.search(head)
    length = int(found[1]) if found else 0
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head, rest[:length], rest[length:]


def message_state(message: Any) -> dict[str, Any]:
    """Everything an ``email.message.Message`` holds, its defects (exceptions) as their
    class and text and the messages of its payload as their own states."""
    state = dict(vars(message))
    state["defects"] = [(type(d), str(d)) for d in message.defects]
    if isinstance(message.get_payload(), list):
        state["_payload"] = [message_state(part) for part in message.get_payload()]
    return state
