"""Mailgun's signature scheme: hex HMAC-SHA256, keyed with the webhook signing key, over
the ``timestamp`` text followed by the ``token``. The body itself is not signed, so a
signature is accepted once only (:class:`SeenTokens`) and only while fresh. "Once" is per
process: the tokens are remembered in memory, so another process (or this one after a
restart) would accept the same signature again within its freshness window.

Guarantees: :func:`hmac_ok` compares in constant time; :class:`SeenTokens` remembers at
most ``size`` tokens (the oldest forgotten first) and is thread-safe.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict

__all__ = ["SeenTokens", "hmac_ok"]


def hmac_ok(key: str, timestamp: str, token: str, signature: str) -> bool:
    """Whether ``signature`` is the hex HMAC-SHA256 of ``timestamp + token`` under ``key``
    (False, never an exception, for any text: a non-ASCII one cannot be a hex digest)."""
    if not signature.isascii():
        return False
    expected = hmac.new(
        key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


class SeenTokens:
    """The tokens already accepted, at most ``size`` of them."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, token: str) -> bool:
        """True (and remember it) when ``token`` was not seen; False for a replay."""
        with self._lock:
            if token in self._seen:
                return False
            self._seen[token] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True

    def forget(self, token: str) -> None:
        """Forget ``token`` (its request was not accepted after all)."""
        with self._lock:
            self._seen.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
