"""The spool: where encoded messages wait between ``emit`` and Segment's answer.

A spool keeps one FIFO queue per tenant. A sender *leases* a batch from the head of a
tenant's queue; the leased messages stay the spool's responsibility until the lease is
settled, message by message, in one of three ways: ``ack`` (Segment accepted them),
``release`` (send them again later, back at the head of the queue, order kept) or
``reject`` (Segment refused them for good; the spool reports them and, if durable, keeps
them as dead letters). A message is never in two live leases at once.

Settling never raises because the spool's storage cannot be written: a durable spool
then keeps the outcome in memory, counts it at once (``empty``, ``backlog``, ``stats``)
and writes it later; misuse (a message settled twice) still raises ValueError.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._mapping import EncodedMessage, TooLarge
from selligent_segment._results import FailureReason

__all__ = ["Lease", "OnBuried", "OnFull", "Spool", "SpoolStats", "buried_reason", "tell_buried"]

log = logging.getLogger("selligent_segment")

#: Told of each record a durable spool's lease buried (a dead letter): its tenant and why
#: (the error that kept it from becoming a message).
OnBuried = Callable[[str, SelligentSegmentError], None]


def tell_buried(
    on_buried: OnBuried | None, tenant: str, errors: Sequence[SelligentSegmentError]
) -> None:
    """Hand each of ``errors`` (why a lease buried a record of ``tenant``) to
    ``on_buried``; one that raises costs a log line, never the lease or the others."""
    if on_buried is None:
        return
    for error in errors:
        try:
            on_buried(tenant, error)
        except Exception:
            log.exception("reporting a buried record failed", extra={"tenant": tenant})


def buried_reason(error: SelligentSegmentError) -> FailureReason:
    """Why a record became a dead letter, as ``stats()`` counts it and ``on_failure``
    reports it (and the ``reason`` of its log line): a message over 32 KB is
    ``too_large``; anything else kept it from being read back, ``unreadable_record``."""
    if isinstance(error, TooLarge):
        return FailureReason.TOO_LARGE
    return FailureReason.UNREADABLE_RECORD


_lease_ids = itertools.count(1)


class OnFull(str, enum.Enum):
    """What ``emit`` does when the spool is full.

    ``raise``: raise :class:`~selligent_segment.SpoolFull` (the caller keeps the event).
    ``block``: wait up to ``block_timeout`` seconds for room, then raise SpoolFull.
    ``drop_newest``: drop the new event, count it, report it through ``on_failure``
    (reason ``spool_full``).
    """

    RAISE = "raise"
    BLOCK = "block"
    DROP_NEWEST = "drop_newest"


@attrs.frozen(slots=True)
class Lease:
    """A batch taken from the head of one tenant's queue, to be settled exactly once."""

    tenant: str
    messages: tuple[EncodedMessage, ...]
    id: int = attrs.field(factory=lambda: next(_lease_ids))


@attrs.frozen(slots=True)
class SpoolStats:
    """A snapshot of what a spool holds (leased messages included)."""

    messages: int
    nbytes: int
    leased: int
    per_tenant: dict[str, int]


class Spool(Protocol):
    """The interface between ``emit`` and the senders; every method is thread-safe."""

    def has_room(self, nbytes: int) -> bool:
        """True when ``nbytes`` more would fit under the size cap now."""

    def put_many(self, messages: Sequence[EncodedMessage]) -> None:
        """Append messages to their tenants' queues (room was checked with has_room)."""

    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        """Take up to ``max_messages`` from the head of ``tenant``'s queue.

        The bodies plus one separator byte each stay within ``max_bytes``; at least one
        message is leased when the queue is not empty. None when nothing is queued.
        """

    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Forget ``messages`` of ``lease``: Segment accepted them."""

    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Put ``messages`` of ``lease`` back at the head of their queue, in order."""

    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        """Settle ``messages`` of ``lease`` as permanently refused, with the reason."""

    def note_error(self, tenant: str, text: str, at: float, status: int | None) -> None:
        """Record ``tenant``'s last delivery error where other processes can see it (a
        spool file); ``text`` holds no write key. Best effort: never raises (a note the
        file cannot keep is logged, throttled, and dropped)."""

    def empty(self) -> bool:
        """True when nothing is queued or leased."""

    def backlog(self, tenant: str) -> int:
        """Messages queued for ``tenant`` and not leased."""

    def tenants(self) -> list[str]:
        """Tenants with queued, unleased messages."""

    def stats(self) -> SpoolStats:
        """A consistent snapshot of the spool's content."""

    def close(self) -> None:
        """Release resources; what is queued is kept (durable) or lost (memory)."""
