"""Where a click redirect may send a browser: one check, used when a click link is built
and again before every redirect.

Guarantee: :func:`check_target` returns only an absolute ``http``/``https`` URL with a
host, no credentials, no backslash, no whitespace or control character and nothing but
ASCII, so the ``Location`` header holds exactly what was sealed and no browser can read it
as another host (``//evil``, ``https:\\\\evil``, ``javascript:``, ``https://good@evil``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from selligent_segment._errors import InvalidEvent

__all__ = ["MAX_TARGET_CHARS", "check_target"]

#: The longest link a click URL may seal (browsers and mail clients cut longer ones).
MAX_TARGET_CHARS = 4096


def check_target(url: object) -> str:
    """``url`` when it is a safe redirect target (see the module text); else raises
    :class:`~selligent_segment.InvalidEvent` naming ``link_url`` and the reason."""
    if not isinstance(url, str):
        raise InvalidEvent("link_url", f"expected text, got {type(url).__name__}")
    if not url or len(url) > MAX_TARGET_CHARS:
        raise InvalidEvent("link_url", f"expected 1 to {MAX_TARGET_CHARS} characters")
    if not url.isascii():
        raise InvalidEvent(
            "link_url", "must be ASCII: percent-encode the path and use the xn-- form of the host"
        )
    if any(c <= " " or c in '\\"<>`\x7f' for c in url):
        raise InvalidEvent(
            "link_url", 'must not hold whitespace, control characters, backslashes, " < > `'
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidEvent("link_url", "not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidEvent("link_url", "must be an absolute http:// or https:// URL")
    if not url.lower().startswith(parts.scheme + "://") or not parts.hostname:
        raise InvalidEvent("link_url", "must name a host (http://host/...)")
    if "@" in parts.netloc:
        raise InvalidEvent("link_url", "must not hold credentials (user@host)")
    return url
