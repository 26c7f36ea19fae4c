"""The library's exceptions: one hierarchy rooted in :class:`SelligentSegmentError`.

No exception text ever contains a write key; email addresses appear only where the
record that carried them is being reported back to its own caller.
"""

from __future__ import annotations

import re

#: How many characters of an echoed name or value an error message shows at most.
SHOWN_LIMIT = 100


# Control characters but the whitespace ones, DEL, and lone surrogates (a JSON "\ud800"
# parses to one): what a PostgreSQL text column (a NUL), a UTF-8 encoder (a surrogate: the
# sqlite3 module, psycopg, a log file) or a terminal cannot take as it is.
_UNWRITABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f\ud800-\udfff]")


def writable(text: str) -> str:
    """``text`` with every character that a spool, an encoder or a terminal cannot take
    (control characters other than whitespace, DEL, lone surrogates) replaced by U+FFFD:
    an outside text (an endpoint's error message) as a spool stores it. The text itself
    when it holds none."""
    return _UNWRITABLE.sub("\ufffd", text)


def shown(value: object, *, quote: bool = True, limit: int = SHOWN_LIMIT) -> str:
    """``value`` made safe to echo in an error message.

    Text is shown in repr form (quoted; control, format and other unprintable characters
    escaped, so no escape sequence reaches a terminal) and cut to ``limit`` characters
    with ``...`` and its full length. With ``quote=False`` (for field names), printable
    text is shown without quotes and only text that needs escaping gets the repr form.
    Other values are shown by their repr, capped the same way; huge integers by their size.
    """
    if isinstance(value, str):
        text = str.__str__(value)  # a subclass's own __repr__ / __str__ is never called
        if len(text) > limit:
            if not quote and text[:limit].isprintable():
                return f"{text[:limit]}... ({len(text):,} characters)"
            return f"{text[:limit]!r}... ({len(text):,} characters)"
        if not quote and text.isprintable():
            return text
        return repr(text)
    if value is None or value is True or value is False:
        return repr(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, int):
        if -(10**limit) < value < 10**limit:
            return int.__repr__(value)
        return f"<an integer of more than {limit} digits>"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ (or a huge value) must not hide the real error
        text = f"<{type(value).__name__}>"
    return shown(text, quote=False, limit=limit)


class SelligentSegmentError(Exception):
    """Base of every exception this library raises on purpose."""


class ConfigurationError(SelligentSegmentError, ValueError):
    """A setting is invalid; raised when the configuration object is constructed.
    ``setting`` names the setting, ``reason`` says why (never with a write key in it)."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class InvalidEvent(SelligentSegmentError, ValueError):
    """A callback record (or the message built from it) was refused.

    ``field`` names the offending field (dotted for nested properties), ``reason`` says why.
    A refused record never affects any other record.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class EmitterClosed(SelligentSegmentError, RuntimeError):
    """``emit`` was called after ``close``; the event was not accepted. From an
    ``emit_many`` that ``close`` cut off: as :class:`SpoolFull` says, ``accepted``
    records were accepted before it, every record before index ``next_index`` was
    accepted or is in ``refused``, and none from ``next_index`` on was accepted."""

    accepted: int = 0
    next_index: int = 0
    refused: tuple[tuple[int, SelligentSegmentError], ...] = ()


class SpoolFull(SelligentSegmentError):
    """The spool is full (or its disk is) and its policy is to refuse; the event was not
    accepted. From ``emit_many``: ``accepted`` records were accepted before it, every
    record before index ``next_index`` was accepted or is in ``refused`` (with its index
    and error, as :class:`BulkResult` lists them), and none from ``next_index`` on was
    accepted: pass those again once there is room."""

    accepted: int = 0
    next_index: int = 0
    refused: tuple[tuple[int, SelligentSegmentError], ...] = ()


class SpoolError(SelligentSegmentError):
    """The durable spool cannot be used: a foreign, corrupt or newer file, or an I/O error.

    A file this library did not create is never modified or deleted.
    """


class UnknownTenant(SelligentSegmentError, LookupError):
    """No write key is configured for a tenant; ``tenant`` is its name (the text shows it
    escaped and cut short; a key is never shown)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(f"no write key configured for tenant {shown(tenant)}")
