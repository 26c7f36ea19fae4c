"""Batches set aside: a failed batch that waits out its own ``Retry-After`` while its
tenant sends on.

A retryable answer that is not a 429 and names its own wait (a 500 or 503 with
``Retry-After``, also 408, 410, 460) speaks of that request: its batch is set aside, still
leased, with the request's message bodies already joined, and the tenant's other batches
keep flowing until the wait is over; the retry then sends the same bytes (``sentAt``
aside) with ``X-Retry-Count``. Everything else keeps the tenant waiting as before: a 429
is the tenant's rate limit, and a failure with no server wait (a 5xx without
``Retry-After``, a timeout, a dropped connection) says nothing about when the server is
back, so the tenant backs off.

:class:`AsidePolicy` is the immutable rule (how many batches one tenant may hold aside,
how many bytes all tenants together); :class:`Aside` is one batch set aside. Nothing here
sends, settles, reads a clock or locks: the dispatcher does, under its own lock.
"""

from __future__ import annotations

from typing import Any

import attrs

from selligent_segment._mapping import EncodedMessage
from selligent_segment._validate import check_number
from selligent_segment.delivery._retry import Backoff, Outcome, server_wait
from selligent_segment.delivery._transport import BatchBodies, Response
from selligent_segment.spool._protocol import Lease

__all__ = [
    "DEFAULT_MAX_ASIDE",
    "DEFAULT_MAX_ASIDE_BYTES",
    "DEFAULT_MAX_ASIDE_WAIT",
    "Aside",
    "AsidePolicy",
    "about_request",
]

#: Batches one tenant may hold aside at once (see :class:`AsidePolicy`).
DEFAULT_MAX_ASIDE = 4
#: The longest server wait a batch is set aside for, in seconds.
DEFAULT_MAX_ASIDE_WAIT = 10.0
#: Memory held by batches set aside, all tenants together: 16 batches of 500,000 bytes
#: (each counts twice: its bodies and their joined array).
DEFAULT_MAX_ASIDE_BYTES = 16_000_000


def _count(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0, integer=True)


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0.0)


@attrs.frozen
class AsidePolicy:
    """How many failed batches wait out their own ``Retry-After`` aside while their
    tenant sends on: an immutable value, validated on construction (a bad value raises
    :class:`~selligent_segment.ConfigurationError` naming the field).

    * ``max_batches``: batches one tenant may hold aside at once (4); 0 turns setting
      aside off (every failure then makes the tenant wait, as a 429 does). When a tenant
      already holds that many, its next such failure makes it wait: an outage costs at
      most ``max_batches`` more requests per ``Retry-After`` period than waiting would.
    * ``max_bytes``: the memory the batches held aside by all tenants together take
      (16,000,000): each counts twice its request bytes, its messages' bodies and their
      joined array, so this bounds that memory whatever the number of tenants. Past it,
      a failure makes its tenant wait.
    * ``max_wait``: the longest server wait a batch is set aside for (10 s): a longer
      ``Retry-After`` is more like an outage than a hiccup of one request, and makes the
      tenant wait. A batch aside keeps its lease, so with a spool whose leases expire (the
      PostgreSQL spool's ``lease_seconds``) the dispatcher also keeps this under half a
      lease, lest another host take the rows and send them again.
    """

    max_batches: int = attrs.field(default=DEFAULT_MAX_ASIDE, validator=_count)
    max_bytes: int = attrs.field(default=DEFAULT_MAX_ASIDE_BYTES, validator=_count)
    max_wait: float = attrs.field(default=DEFAULT_MAX_ASIDE_WAIT, validator=_seconds)


def about_request(response: Response) -> bool:
    """True when ``response`` is a retryable failure about that request alone: an answer
    (a status, not a network failure), not a 429, with a wait of the server's own."""
    return (
        response.outcome is Outcome.RETRY
        and response.status is not None
        and server_wait(response.outcome, response.retry_after, response.rate_limit_reset)
        is not None
    )


@attrs.define
class Aside:
    """One batch set aside: its lease and messages, its bodies as joined for the request
    that failed (sent again as they are), its own :class:`~._retry.Backoff` (its
    budgets this batch's; its ``X-Retry-Count``, as any batch's, its messages' retries),
    when it may be sent again, its size in request bytes, and when it may no longer be
    sent (``stale_at``: half its lease after it was leased, with a spool whose leases
    expire; past it, another host may have taken the rows, so the batch goes back to the
    queue instead), and when it was leased (the clock's monotonic time)."""

    lease: Lease
    messages: tuple[EncodedMessage, ...]
    bodies: BatchBodies
    backoff: Backoff
    due: float
    nbytes: int
    stale_at: float = float("inf")
    leased_at: float = 0.0
