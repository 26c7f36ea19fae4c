"""The library's exceptions: one hierarchy rooted in :class:`SelligentSegmentError`.

No exception text ever contains a write key; email addresses appear only where the
record that carried them is being reported back to its own caller.
"""

from __future__ import annotations


class SelligentSegmentError(Exception):
    """Base of every exception this library raises on purpose."""


class ConfigurationError(SelligentSegmentError, ValueError):
    """A setting is invalid; raised when the configuration object is constructed."""

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
    """``emit`` was called after ``close``; the event was not accepted."""


class SpoolFull(SelligentSegmentError):
    """The spool is full (or its disk is) and its policy is to refuse; the event was not
    accepted. From ``emit_many``, ``accepted`` records before it were accepted."""

    accepted: int = 0


class SpoolError(SelligentSegmentError):
    """The durable spool cannot be used: a foreign, corrupt or newer file, or an I/O error.

    A file this library did not create is never modified or deleted.
    """


class UnknownTenant(SelligentSegmentError, LookupError):
    """No write key is configured for a tenant (the key itself is never shown)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        super().__init__(f"no write key configured for tenant {tenant!r}")
