"""What the library hands back: :class:`BulkResult` from ``emit_many`` and
:class:`DeliveryFailure` for ``on_failure``, with the closed set of
:class:`FailureReason` codes."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._mapping import EncodedMessage

__all__ = ["BulkResult", "DeliveryFailure", "FailureReason"]


@attrs.frozen
class BulkResult:
    """What :meth:`Emitter.emit_many` did: how many records it accepted, and the refused
    ones as ``(index, error)`` pairs. A refused record never costs another one."""

    accepted: int
    refused: tuple[tuple[int, SelligentSegmentError], ...] = ()


class FailureReason(str, enum.Enum):
    """Why events were settled without delivery (a ``str``: compares equal to its code)."""

    REJECTED = "rejected"
    """Segment refused them for good (400, 413, 422, or another never-retried status)."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """The retry budget ran out before Segment took them."""
    TOO_LARGE = "too_large"
    """The message would be over Segment's 32 KB limit."""
    SPOOL_FULL = "spool_full"
    """Dropped at ``emit`` by ``on_full="drop_newest"``."""
    UNSENT_AT_CLOSE = "unsent_at_close"
    """Still queued (or in flight) when ``close()`` gave up (memory spool)."""
    UNREADABLE_RECORD = "unreadable_record"
    """A spooled record that could not be read back into its message when it was leased
    (damaged bytes, or written by a release that this one cannot read); kept as a dead
    letter."""

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class DeliveryFailure:
    """Messages settled without delivery, handed to ``on_failure``.

    ``reason`` is a :class:`FailureReason` (compares equal to its code, e.g.
    ``"rejected"``); ``detail`` says more (never a write key); ``status`` is the HTTP
    status when there was one; ``message_ids`` and ``bodies`` are the messages, in order
    (empty when they never became messages). Build one with the named constructors.
    """

    tenant: str
    reason: FailureReason = attrs.field(converter=FailureReason)
    detail: str
    status: int | None
    message_ids: tuple[str, ...]
    bodies: tuple[bytes, ...] = attrs.field(repr=False)

    @classmethod
    def of(
        cls,
        tenant: str,
        reason: FailureReason,
        detail: str,
        messages: Sequence[EncodedMessage] = (),
        status: int | None = None,
    ) -> DeliveryFailure:
        """``messages`` of ``tenant`` settled for ``reason``."""
        return cls(
            tenant,
            reason,
            detail,
            status,
            tuple(m.message_id for m in messages),
            tuple(m.body for m in messages),
        )

    @classmethod
    def rejected(
        cls, tenant: str, messages: Sequence[EncodedMessage], detail: str, status: int | None
    ) -> DeliveryFailure:
        """Segment refused ``messages`` for good with ``status``."""
        return cls.of(tenant, FailureReason.REJECTED, detail, messages, status)

    @classmethod
    def retries_exhausted(
        cls, tenant: str, messages: Sequence[EncodedMessage], detail: str
    ) -> DeliveryFailure:
        """The retry budget ran out for ``messages``."""
        return cls.of(tenant, FailureReason.RETRIES_EXHAUSTED, detail, messages)

    @classmethod
    def too_large(cls, tenant: str, detail: str) -> DeliveryFailure:
        """An event whose message would pass 32 KB (it never became a message)."""
        return cls.of(tenant, FailureReason.TOO_LARGE, detail)

    @classmethod
    def unreadable(cls, tenant: str, detail: str) -> DeliveryFailure:
        """A spooled record of ``tenant`` that could not become its message (see
        :attr:`FailureReason.UNREADABLE_RECORD`)."""
        return cls.of(tenant, FailureReason.UNREADABLE_RECORD, detail)

    @classmethod
    def spool_full(cls, tenant: str, count: int = 1) -> DeliveryFailure:
        """An event of ``tenant`` dropped at ``emit`` by ``on_full="drop_newest"`` (detail
        ``"spool full"``), or ``count`` of them dropped together from one ``emit_many``
        chunk (detail ``"spool full: N events dropped"``): one failure per tenant."""
        detail = "spool full" if count == 1 else f"spool full: {count} events dropped"
        return cls.of(tenant, FailureReason.SPOOL_FULL, detail)

    @classmethod
    def unsent_at_close(cls, tenant: str, messages: Sequence[EncodedMessage]) -> DeliveryFailure:
        """``messages`` still queued or in flight when ``close()`` gave up."""
        return cls.of(tenant, FailureReason.UNSENT_AT_CLOSE, "closed before delivery", messages)
