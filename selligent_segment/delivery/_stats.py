"""Delivery counters, kept per tenant, and their public snapshot."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

import attrs

__all__ = ["Counters", "Stats", "TenantStats"]


@attrs.frozen
class TenantStats:
    """Counters of one tenant. ``rejected`` and ``dropped`` are keyed by reason."""

    accepted: int = 0
    delivered: int = 0
    retried: int = 0
    queued: int = 0
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    paused: str | None = None


@attrs.frozen
class Stats:
    """A snapshot of an emitter's counters; ``tenants`` holds the per-tenant detail.

    accepted = delivered + rejected + dropped-after-acceptance + queued, per tenant, at
    any quiet moment. ``refused`` counts events ``emit`` did not accept (spool full).
    """

    accepted: int
    delivered: int
    retried: int
    queued: int
    rejected: Mapping[str, int]
    dropped: Mapping[str, int]
    refused: Mapping[str, int]
    requests: int
    tenants: Mapping[str, TenantStats]


class Counters:
    """Thread-safe mutable counters behind :class:`Stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
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

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def snapshot(self, queued: Mapping[str, int], paused: Mapping[str, str]) -> Stats:
        with self._lock:
            names = set(self.accepted) | set(queued) | set(self.rejected) | set(self.dropped)
            tenants = {
                t: TenantStats(
                    accepted=self.accepted[t],
                    delivered=self.delivered[t],
                    retried=self.retried[t],
                    queued=queued.get(t, 0),
                    rejected=dict(self.rejected.get(t, {})),
                    dropped=dict(self.dropped.get(t, {})),
                    paused=paused.get(t),
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
            )
