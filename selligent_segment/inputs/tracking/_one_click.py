"""Reading an RFC 8058 one-click POST body: ``List-Unsubscribe=One-Click``, sent as
``application/x-www-form-urlencoded`` or ``multipart/form-data`` (both must be accepted).

Guarantee: :func:`one_click_problem` returns None exactly when the body, in the encoding
its ``Content-Type`` names, holds the field ``List-Unsubscribe`` with the value
``One-Click``; otherwise the reason, naming the field. It never raises.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from selligent_segment.inputs._transfer_encoding import undo_transfer_encoding

__all__ = ["one_click_problem"]

_FIELD = "List-Unsubscribe"
_VALUE = "One-Click"
_EXPECTED = (
    f"expected {_FIELD}={_VALUE} as application/x-www-form-urlencoded or multipart/form-data"
)


def one_click_problem(content_type: str | None, body: bytes) -> str | None:
    """None when ``body`` is a one-click unsubscribe request, else why not."""
    if content_type is not None and len(content_type) > _MAX_CONTENT_TYPE:
        return f"Content-Type: longer than {_MAX_CONTENT_TYPE} characters; {_EXPECTED}"
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
    """The values of the ``List-Unsubscribe`` fields of a ``multipart/form-data`` body
    (RFC 7578), or None when it has no part under the boundary its Content-Type names.
    Read in one pass over the bytes: a form field never nests, and a general MIME parser
    spends long on crafted parameters and nesting (this runs on the event loop)."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return None
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1", "replace")
    pieces = body.split(delimiter)
    if len(pieces) < 2:
        return None
    values: list[str] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):  # the close delimiter
            break
        head, sep, content = piece.lstrip(b" \t").partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = piece.lstrip(b" \t").partition(b"\n\n")
        if not sep:
            continue
        content = content.removesuffix(b"\n").removesuffix(b"\r")  # the delimiter's CRLF
        name, encoding = _part_header(head)
        if name == _FIELD:
            decoded = undo_transfer_encoding(content, encoding)  # RFC 7578 deprecates it
            text = (content if decoded is None else decoded).decode("utf-8", "replace")
            values.append(text.strip())
    return values


_MAX_CONTENT_TYPE = 1024
# A boundary is 1 to 70 characters (RFC 2046), quoted or a token.
_BOUNDARY = re.compile(r'(?i);\s*boundary\s*=\s*(?:"([^"\r\n]{1,70})"|([^\s;"]{1,70}))')
_NAME = re.compile(r'(?i);\s*name\s*=\s*(?:"([^"\r\n]*)"|([^\s;"]+))')


def _part_header(head: bytes) -> tuple[str | None, str]:
    """The ``name`` of a part's Content-Disposition and its Content-Transfer-Encoding."""
    name: str | None = None
    encoding = ""
    for line in head.decode("latin-1").splitlines():
        field, _, value = line.partition(":")
        field = field.strip().lower()
        if field == "content-disposition":
            found = _NAME.search(value)
            if found is not None:
                name = found.group(1) if found.group(1) is not None else found.group(2)
        elif field == "content-transfer-encoding":
            encoding = value.strip().lower()
    return name, encoding
