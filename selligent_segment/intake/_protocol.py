"""The :class:`Intake` protocol: where ``emit`` puts an accepted record, and how the
encoder moves it into the spool. Three engines: memory (``_memory``), the durable
journal + SQLite file (``_journal``) and the shared PostgreSQL table (``_postgres``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from selligent_segment._errors import InvalidEvent, SelligentSegmentError, shown
from selligent_segment._results import DeliveryFailure, FailureReason
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._stats import Counters
from selligent_segment.intake._backpressure import Backpressure
from selligent_segment.spool._protocol import Spool, buried_reason

__all__ = ["Accepted", "Downstream", "Intake"]

log = logging.getLogger("selligent_segment")

#: One accepted record: its normalised fields, its tenant, and the emit time (epoch
#: seconds) when the record carries no timestamp of its own.
Accepted = tuple[dict[str, Any], str, "float | None"]


@attrs.define(eq=False)
class Downstream:
    """What an intake hands its work to: the counters, back-pressure, the senders (set
    once they exist) and the ``on_failure`` report."""

    counters: Counters
    backpressure: Backpressure
    report: Callable[[DeliveryFailure], None]
    dispatcher: Dispatcher | None = None

    def senders(self) -> Dispatcher:
        assert self.dispatcher is not None, "the dispatcher is attached before any work"
        return self.dispatcher

    def too_large(self, tenant: str, exc: InvalidEvent) -> None:
        """Count and report an event whose message would be over 32 KB."""
        self.counters.add_reason("rejected", tenant, "too_large")
        log.error(
            "tenant %s: event refused: %s",
            shown(tenant),
            exc,
            extra={"tenant": tenant, "reason": "too_large"},
        )
        self.report(DeliveryFailure.too_large(tenant, str(exc)))

    def buried(self, tenant: str, error: SelligentSegmentError) -> None:
        """Count and report a record that a lease made a dead letter (the spool logged it
        and kept it): a message over 32 KB, or a record that cannot be read back."""
        if buried_reason(error) is FailureReason.TOO_LARGE:
            self.counters.add_reason("rejected", tenant, "too_large")
            self.report(DeliveryFailure.too_large(tenant, str(error)))
        else:
            self.counters.add_reason("dropped", tenant, "unreadable_record")
            self.report(DeliveryFailure.unreadable(tenant, str(error)))


class Intake(Protocol):
    """Accepted records on their way into the spool. ``accept``/``accept_many`` run in the
    caller's thread and never wait on the network or on a lock held across I/O; ``step``
    and ``maintain`` run in the encoder thread."""

    @property
    def spool(self) -> Spool:
        """The spool the senders lease from."""
        ...

    @property
    def durable(self) -> bool:
        """True when a record is durable once accepted (then ``emit_many`` waits for the
        encoder instead of applying ``on_full``, and the encoder yields to bulk calls)."""
        ...

    def pending(self) -> int:
        """Accepted records not moved into the spool yet."""
        ...

    def has_work(self) -> bool:
        """True while records wait for the encoder (exact, unlike :meth:`pending`, which
        back-pressure reads without a lock)."""
        ...

    def accept(self, fields: dict[str, Any], tenant: str, now: float | None) -> bool:
        """Take one validated record; False when ``on_full="drop_newest"`` dropped it
        (an intake that writes the spool at once applies ``on_full`` itself, when the
        spool is at ``max_spool_bytes``: it may also wait, or raise SpoolFull)."""
        ...

    def accept_many(self, records: Sequence[Accepted]) -> bool:
        """Take validated records, in order (one journal write with a spool file); False
        when ``on_full="drop_newest"`` dropped them all (see :meth:`accept`)."""
        ...

    def step(self, stopping: Callable[[], bool]) -> None:
        """Encoder thread: move up to a chunk of records into the spool."""
        ...

    def maintain(self) -> list[str]:
        """Encoder thread, about once a second: upkeep of the spool; the tenants that got
        messages from it (e.g. what a dead process left)."""
        ...

    def queued(self) -> dict[str, int]:
        """Records waiting per tenant: in the intake and in the spool."""
        ...

    def queued_now(self) -> dict[str, int] | None:
        """:meth:`queued`, or None when it would wait for a write that holds the spool."""
        ...

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        """Record (or clear, with None) that ``tenant`` is paused, where others can see it."""
        ...

    def close(self, dispatcher: Dispatcher, *, encoder_busy: bool = False) -> bool:
        """The senders stopped: settle what is left (report it, or keep it for the next
        start) and release the spool; True when events were given up. Run again after
        being cut short, it finishes the work. ``encoder_busy``: the encoder is still in a
        step (it did not stop in time), holding records out of the inbox: they must be
        settled too, when the step ends."""
        ...

    def late(self) -> None:
        """``emit`` accepted records while close() ran: make sure they are settled (kept
        for the next start, or reported ``unsent_at_close``), never left unseen."""
        ...

    def abandon(self) -> None:
        """In a forked child: drop what belongs to the parent without touching it."""
        ...


def notify_settled(condition: threading.Condition) -> None:
    """Wake whoever waits for the pipeline to settle (``flush``)."""
    with condition:
        condition.notify_all()
