"""How a failed recipient's status becomes a bounce type: ``hard``, ``soft`` or
undetermined (``None``), from the enhanced status code (RFC 3463) or, without one, the
basic SMTP reply code.

Class 5 (permanent) is hard and class 4 (transient) soft, except the permanent codes that
say nothing about the address itself, which are soft: the sender may try that address
again later.
"""

from __future__ import annotations

import re

__all__ = ["SOFT_PERMANENT", "basic_code_in", "bounce_type", "status_in"]

#: Permanent (5.x.x) codes treated as soft, and why: the address exists and may work later.
SOFT_PERMANENT: dict[str, str] = {
    "5.2.2": "mailbox full: a quota that clears (most providers count it soft)",
    "5.3.4": "message too big for the system: about the message, not the address",
    "5.2.3": "message length exceeds the limit: about the message, not the address",
    "552": "exceeded storage allocation (the basic code of a full mailbox)",
    "5.7": "security or policy (blocked sender or content, DMARC, spam): the sender is "
    "refused, not the address",
}

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Not inside a word, an address or a host name (``user450@``, ``mx250-1.example``).
_BASIC = re.compile(r"(?<![\w.@-])([245])\d\d(?![\w.@])")


def status_in(text: str | None) -> str | None:
    """The first enhanced status code (``5.1.1``) in ``text``, or None."""
    if not text:
        return None
    found = _ENHANCED.search(text)
    return ".".join(found.groups()) if found else None


def basic_code_in(text: str | None) -> str | None:
    """The first basic SMTP reply code (``550``) in ``text``, or None."""
    if not text:
        return None
    found = _BASIC.search(text)
    return found.group(0) if found else None


def bounce_type(status: str | None) -> str | None:
    """``hard``, ``soft`` or None (undetermined) for an enhanced (``5.1.1``) or basic
    (``550``) status; see :data:`SOFT_PERMANENT` for the permanent codes that are soft."""
    if not status:
        return None
    if status[0] == "4":
        return "soft"
    if status[0] != "5":
        return None
    if status in SOFT_PERMANENT or status.startswith("5.7."):
        return "soft"
    return "hard"
