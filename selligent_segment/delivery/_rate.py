"""The request-rate cap: one token bucket per write key, known by its fingerprint only.

Guarantee: through :meth:`RateLimits.take`, at most ``rate`` requests per second on average
leave with one write key, in bursts of at most ``burst`` (a tenth of a second's worth, at
least one) at once; tenants sharing a key share its bucket. A bucket is keyed by the key's
fingerprint, never by the key, so no key is kept here. Nothing here reads a clock, sleeps
or locks: the caller passes ``now`` and holds its own lock.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["TOKEN_SLACK", "Bucket", "RateLimits"]

#: A request token short by less than this is whole: the refill ``elapsed * rate`` is
#: rounded (0.05 s at 20/s gives 0.9999999999999964 tokens), and a wait for the missing
#: 4e-15 token would round to no wait at all, a turn that finds the bucket short again, on
#: a clock that has not moved (a fake one never does by itself): a busy loop.
TOKEN_SLACK = 1e-6


@attrs.define
class Bucket:
    """The request-rate token bucket of one write key: ``tokens`` as of ``refilled``."""

    tokens: float = 0.0
    refilled: float = float("-inf")


class RateLimits:
    """The token buckets of every write key, by fingerprint, refilled at ``rate`` per
    second up to ``burst``. A ``rate`` of 0 means no cap: callers skip the buckets."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate / 10)
        self.buckets: dict[str, Bucket] = {}  # by key fingerprint, never by key

    def bucket(self, tag: str) -> Bucket:
        """The bucket of the key fingerprinted ``tag`` (a new, full one the first time)."""
        bucket = self.buckets.get(tag)
        if bucket is None:
            bucket = self.buckets[tag] = Bucket()
        return bucket

    def tokens(self, bucket: Bucket, now: float) -> float:
        """The tokens ``bucket`` holds at ``now``, refill included."""
        return min(self.burst, bucket.tokens + (now - bucket.refilled) * self.rate)

    def take(self, bucket: Bucket, now: float) -> bool:
        """Take a token from ``bucket`` at ``now``; False (nothing taken) when it holds
        less than one (less by :data:`TOKEN_SLACK` or more)."""
        tokens = self.tokens(bucket, now)
        if tokens < 1.0 - TOKEN_SLACK:
            return False
        bucket.tokens = tokens - 1.0
        bucket.refilled = now
        return True

    def charge(self, bucket: Bucket, n: float) -> None:
        """Take ``n`` tokens already spent (requests made beyond the one a turn took);
        the bucket may go below zero, which delays its next whole token."""
        bucket.tokens -= n

    def refund(self, bucket: Bucket) -> None:
        """Give back a token taken for a request that was not sent."""
        bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    def ready_at(self, bucket: Bucket, now: float) -> float:
        """When ``bucket`` holds a whole token again: ``-inf`` when it holds one now, else
        a time strictly after ``now`` (never "now" by rounding)."""
        tokens = self.tokens(bucket, now)
        if tokens < 1.0 - TOKEN_SLACK:
            return max(now + (1.0 - tokens) / self.rate, math.nextafter(now, math.inf))
        return -math.inf
