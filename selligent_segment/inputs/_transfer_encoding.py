"""A MIME part's ``Content-Transfer-Encoding`` undone: the one place that decodes base64
and quoted-printable for the input adapters (report parts, one-click unsubscribe bodies)."""

from __future__ import annotations

import base64
import quopri

__all__ = ["undo_transfer_encoding"]


def undo_transfer_encoding(data: bytes, encoding: object) -> bytes | None:
    """``data`` with its transfer encoding undone when that is base64 or quoted-printable
    (any case, spaces around); ``data`` itself for any other (7bit, 8bit, binary, none,
    unknown); None when it does not decode. Never raises."""
    name = str(encoding or "").strip().lower()
    try:
        if name == "base64":
            return base64.b64decode(data)
        if name == "quoted-printable":
            return quopri.decodestring(data)
    except ValueError:  # binascii.Error
        return None
    return data
