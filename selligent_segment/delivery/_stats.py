"""Delivery counters, kept per tenant, and their public snapshot.

Guarantee: every count is changed, and a snapshot taken, under one lock, so a snapshot
never shows half an update; with the queue lengths it is given, accepted = delivered +
rejected + dropped-after-acceptance + queued, per tenant, at any quiet moment. The last
delivery error of a tenant is kept as text the transport already scrubbed of write keys,
cut to :data:`ERROR_TEXT_MAX` characters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import attrs

__all__ = ["ERROR_TEXT_MAX", "Counters", "LastError", "Stats", "TenantStats"]

#: The longest error text kept (longer ones are cut and end with an ellipsis).
ERROR_TEXT_MAX = 300


@attrs.frozen
class LastError:
    """The last delivery error of a tenant: what went wrong, when, and the HTTP status.

    Guarantee: ``text`` never holds a write key (it is built from the transport's
    scrubbed error text, a status, or a pause reason) and is at most
    :data:`ERROR_TEXT_MAX` characters.
    """

    text: str
    """What went wrong: ``HTTP 503``, ``connection refused``, ``write key refused (401)``."""
    at: float
    """When, as a Unix time (seconds)."""
    status: int | None = None
    """The HTTP status of the answer, or None (no answer: a network error, a missing key)."""

    def to_dict(self) -> dict[str, object]:
        """``{"text": ..., "at": ..., "status": ...}``, for JSON output."""
        return {"text": self.text, "at": self.at, "status": self.status}


@attrs.frozen
class TenantStats:
    """Counters of one tenant. ``rejected`` and ``dropped`` are keyed by reason."""

    accepted: int = 0
    """Events ``emit`` accepted (counted when the encoder takes them)."""
    delivered: int = 0
    """Events Segment took (a 2xx for their batch)."""
    retried: int = 0
    """Event re-sends after a transient failure: each retry of a batch counts each of its
    events again, so an event retried five times counts five (this can exceed the
    events); not the number of distinct events retried."""
    retried_events: int = 0
    """Distinct events that needed at least one retry (each counted once, in the process
    that retried it)."""
    queued: int = 0
    """Events waiting now: in memory, or in the spool file."""
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    """Events refused for good, by reason (``rejected``, ``too_large``)."""
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    """Events given up, by reason (``retries_exhausted``, ``unsent_at_close``)."""
    paused: str | None = None
    """Why the tenant is paused (its key was refused or is missing), or None."""
    last_error: LastError | None = None
    """The last delivery error (a retried or refused request, a pause), or None when
    there was none. Kept after a later success: compare ``last_error.at`` with the time."""


@attrs.frozen
class Stats:
    """A snapshot of an emitter's counters; ``tenants`` holds the per-tenant detail.

    accepted = delivered + rejected + dropped-after-acceptance + queued, per tenant, at
    any quiet moment. ``refused`` counts events ``emit`` did not accept (spool full).
    """

    accepted: int
    """Events ``emit`` accepted, all tenants."""
    delivered: int
    """Events Segment took."""
    retried: int
    """Event re-sends after a transient failure: each retry of a batch counts each of its
    events again, so an event retried five times counts five (this can exceed the
    events); not the number of distinct events retried: see :attr:`retried_events`."""
    queued: int
    """Events waiting now."""
    rejected: Mapping[str, int]
    """Events refused for good, by reason."""
    dropped: Mapping[str, int]
    """Events accepted then given up, by reason."""
    refused: Mapping[str, int]
    """Events ``emit`` did not accept, by reason (``spool_full``)."""
    requests: int
    """HTTP requests sent, bisection parts included."""
    tenants: Mapping[str, TenantStats]
    """The same counters per tenant."""
    retried_events: int = 0
    """Distinct events that needed at least one retry."""


class Counters:
    """Thread-safe mutable counters behind :class:`Stats`; ``now`` gives the Unix time
    of a recorded error (the clock seam: a test hands in a fixed one)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._now = now
        self.last_error: dict[str, LastError] = {}
        self.accepted: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        self.retried_events: Counter[str] = Counter()
        self.rejected: dict[str, Counter[str]] = {}
        self.dropped: dict[str, Counter[str]] = {}
        self.refused: Counter[str] = Counter()
        self.requests = 0

    def add(self, name: str, tenant: str, n: int = 1) -> None:
        with self._lock:
            counter: Counter[str] = getattr(self, name)
            counter[tenant] += n

    def add_many(self, name: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            counter: Counter[str] = getattr(self, name)
            counter.update(counts)

    def add_reason(self, name: str, tenant: str, reason: str, n: int = 1) -> None:
        with self._lock:
            table: dict[str, Counter[str]] = getattr(self, name)
            table.setdefault(tenant, Counter())[reason] += n

    def refuse(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.refused[reason] += n

    def new_error(self, text: str, status: int | None = None) -> LastError:
        """A :class:`LastError` of ``text`` (already free of write keys), cut to
        :data:`ERROR_TEXT_MAX` characters, stamped now; not recorded yet."""
        if len(text) > ERROR_TEXT_MAX:
            text = text[: ERROR_TEXT_MAX - 1] + "\u2026"
        return LastError(text, self._now(), status)

    def set_error(self, tenant: str, error: LastError) -> None:
        """Record ``error`` as ``tenant``'s last delivery error."""
        with self._lock:
            self.last_error[tenant] = error

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def snapshot(self, queued: Mapping[str, int], paused: Mapping[str, str]) -> Stats:
        with self._lock:
            names = set(self.accepted) | set(queued) | set(self.rejected) | set(self.dropped)
            names |= set(self.last_error)
            # a tenant this process only delivered (or retried) events of, accepted by
            # another process sharing the spool file, is counted too
            names |= set(self.delivered) | set(self.retried) | set(self.retried_events)
            tenants = {
                t: TenantStats(
                    accepted=self.accepted[t],
                    delivered=self.delivered[t],
                    retried=self.retried[t],
                    retried_events=self.retried_events[t],
                    queued=queued.get(t, 0),
                    rejected=dict(self.rejected.get(t, {})),
                    dropped=dict(self.dropped.get(t, {})),
                    paused=paused.get(t),
                    last_error=self.last_error.get(t),
                )
                for t in sorted(names)
            }
            rejected: Counter[str] = Counter()
            dropped: Counter[str] = Counter()
            for table in self.rejected.values():
                rejected.update(table)
            for table in self.dropped.values():
                dropped.update(table)
            return Stats(
                accepted=sum(self.accepted.values()),
                delivered=sum(self.delivered.values()),
                retried=sum(self.retried.values()),
                queued=sum(queued.values()),
                rejected=dict(rejected),
                dropped=dict(dropped),
                refused=dict(self.refused),
                requests=self.requests,
                tenants=tenants,
                retried_events=sum(self.retried_events.values()),
            )
