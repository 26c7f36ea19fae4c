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

__all__ = ["RetryAllowance", "SeenTokens", "hmac_ok"]


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


class RetryAllowance:
    """Signed requests answered 503 whose retry may come after the freshness window (a
    retry re-sends the signature it was first sent with): each key until its deadline,
    at most ``size`` of them (the oldest forgotten first). Thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, until: float) -> None:
        """Let a retry of ``key`` in, however old its timestamp, until ``until``."""
        with self._lock:
            self._until[key] = until
            self._until.move_to_end(key)
            while len(self._until) > self._size:
                self._until.popitem(last=False)

    def allowed(self, key: str, now: float) -> bool:
        """Whether a retry of ``key`` may come in now."""
        with self._lock:
            until = self._until.get(key)
            return until is not None and now <= until

    def done(self, key: str) -> None:
        """``key``'s retry came in: no further allowance."""
        with self._lock:
            self._until.pop(key, None)
