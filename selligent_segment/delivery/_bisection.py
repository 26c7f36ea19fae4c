"""Bisection of a batch refused as a whole: its parts still to be sent, and its tally.

A batch Segment refuses as a whole (400, 413, 422) may be refused for one or two bad
messages among hundreds. It is split in halves, each sent as a turn of its own (so the
rate cap and the round-robin apply to these requests too), and a refused half of more than
one message is split again, until every message is delivered or refused alone.

Guarantees: parts are sent in queue order, the first half before the second; the outcome
is logged once per refused batch (at WARNING when every message was delivered in the end,
ERROR when some were refused), not once per message. Nothing here sends, settles or locks:
the caller holds the tenant's turn.
"""

from __future__ import annotations

import logging
from collections import deque

import attrs

from selligent_segment._errors import shown
from selligent_segment._mapping import EncodedMessage
from selligent_segment.spool._protocol import Lease

__all__ = ["BISECTED_STATUSES", "Bisection", "Part"]

log = logging.getLogger("selligent_segment")

#: The statuses that refuse a batch for what is in it, so a part of it may pass.
BISECTED_STATUSES = frozenset({400, 413, 422})

#: A part of a leased batch still to be sent: the lease and the messages of the part.
Part = tuple[Lease, tuple[EncodedMessage, ...]]


@attrs.define
class _Tally:
    """The tally of one refused batch being bisected, for its single log line."""

    lease_id: int
    total: int
    error: str
    requests: int = 1
    delivered: int = 0
    rejected: int = 0


@attrs.define
class Bisection:
    """The bisection of one tenant's refused batch: ``parts`` still to be sent (in queue
    order, one per turn; empty when none is under way) and the tally for the log line."""

    parts: deque[Part] = attrs.field(factory=deque)
    tally: _Tally | None = None

    @property
    def active(self) -> bool:
        """True while a refused batch is being bisected (its outcome not yet logged)."""
        return self.tally is not None

    def split(
        self,
        lease: Lease,
        messages: tuple[EncodedMessage, ...],
        status: int | None,
        error: str | None,
    ) -> bool:
        """Queue the halves of ``messages`` (refused with ``status``) to be sent first, and
        True; False when they are not to be bisected (one message, or another status)."""
        if len(messages) > 1 and status in BISECTED_STATUSES:
            if self.tally is None:
                self.tally = _Tally(lease.id, len(messages), error or f"HTTP {status}")
            self.tally.requests += 2
            half = len(messages) // 2
            self.parts.extendleft([(lease, messages[half:]), (lease, messages[:half])])
            return True
        return False

    def must_wait(
        self, lease: Lease, messages: tuple[EncodedMessage, ...], status: int | None
    ) -> bool:
        """True when ``messages`` of ``lease``, refused with ``status``, are to be bisected
        but another batch of the tenant is being bisected (one sent beside it before its
        refusal came): they go back whole, to be sent again once that one is done, so that
        each refused batch has its own parts, in order, and its own log line."""
        return (
            len(messages) > 1
            and status in BISECTED_STATUSES
            and self.tally is not None
            and self.tally.lease_id != lease.id
        )

    def owns(self, lease: Lease) -> bool:
        """True when ``lease`` is the batch being bisected (not another request of the
        tenant that was already out when its refusal came)."""
        return self.tally is not None and self.tally.lease_id == lease.id

    def count_delivered(self, lease: Lease, n: int) -> None:
        """Count ``n`` messages of a part of the bisected batch as delivered."""
        if self.tally is not None and self.owns(lease):
            self.tally.delivered += n

    def count_rejected(self, lease: Lease, n: int) -> None:
        """Count ``n`` messages of a part of the bisected batch as refused."""
        if self.tally is not None and self.owns(lease):
            self.tally.rejected += n

    def gather(
        self, tenant: str, lease: Lease, messages: tuple[EncodedMessage, ...]
    ) -> tuple[EncodedMessage, ...]:
        """``messages`` of ``lease`` and, when that is the bisected batch, every part of it
        still queued, in queue order: the bisection is abandoned (they go back, or fail,
        together, under their own lease) and its outcome so far logged, also when the
        part that failed was its last. Messages of another lease come back alone."""
        if not self.owns(lease):
            return messages
        rest = [m for part_lease, part in self.parts if part_lease.id == lease.id for m in part]
        self.parts = deque(p for p in self.parts if p[0].id != lease.id)
        self.end(tenant, lease)
        return messages + tuple(rest)

    def end(self, tenant: str, lease: Lease) -> None:
        """Log the outcome of the bisection of ``tenant``'s batch once its last part is
        settled (``lease`` is the batch a part was of): nothing while parts remain, when
        none is under way, or for another batch of the tenant (one already out when the
        refusal came)."""
        tally = self.tally
        if tally is None or self.parts or tally.lease_id != lease.id:
            return
        self.tally = None
        level = logging.ERROR if tally.rejected else logging.WARNING
        log.log(
            level,
            "tenant %s: a batch of %d events was refused (%s); "
            "bisected in %d requests: %d delivered, %d rejected",
            shown(tenant),
            tally.total,
            tally.error,
            tally.requests,
            tally.delivered,
            tally.rejected,
            extra={"tenant": tenant, "reason": "rejected", "count": tally.rejected},
        )
