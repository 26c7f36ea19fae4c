"""Reading an RFC 8058 one-click POST body: ``List-Unsubscribe=One-Click``, sent as
``application/x-www-form-urlencoded`` or ``multipart/form-data`` (both must be accepted).

Guarantee: :func:`one_click_problem` returns None exactly when the body, in the encoding
its ``Content-Type`` names, holds the field ``List-Unsubscribe`` with the value
``One-Click``; otherwise the reason, naming the field. It never raises.
"""

from __future__ import annotations

import email.parser
import email.policy
from urllib.parse import parse_qs

__all__ = ["one_click_problem"]

_FIELD = "List-Unsubscribe"
_VALUE = "One-Click"
_EXPECTED = (
    f"expected {_FIELD}={_VALUE} as application/x-www-form-urlencoded or multipart/form-data"
)


def one_click_problem(content_type: str | None, body: bytes) -> str | None:
    """None when ``body`` is a one-click unsubscribe request, else why not."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        values = _urlencoded(body)
    elif media == "multipart/form-data":
        values = _multipart(content_type or "", body)
    else:
        return f"Content-Type: {_EXPECTED}"
    if values is None:
        return f"body: {_EXPECTED}"
    if _VALUE not in values:
        return f"{_FIELD}: {_EXPECTED}"
    return None


def _urlencoded(body: bytes) -> list[str] | None:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return [v.strip() for v in fields.get(_FIELD, [])]


def _multipart(content_type: str, body: bytes) -> list[str] | None:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return None
        values = []
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") != _FIELD:
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                values.append(payload.decode("utf-8", "replace").strip())
    except Exception:  # a malformed body is a refusal, never a crash
        return None
    return values
