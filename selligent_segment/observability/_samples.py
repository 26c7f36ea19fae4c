"""The metrics, written once: their names, kinds, units and labels, and the values one
:class:`~selligent_segment.observability.Observation` gives them.

The Prometheus collector and the OpenTelemetry instruments both read :data:`METRICS` and
:func:`samples`, so the two exports cannot drift apart.

Tenant labels are off by default: a platform with thousands of tenants must not make
thousands of series per metric. With ``tenant_labels=N`` the gauges carry a ``tenant``
label for the N tenants with the largest backlog at this reading, and the counters for N
tenants chosen once for good (:class:`TenantLabels`); every other tenant is summed into
``tenant="other"`` (for the oldest age, the maximum), so a metric has at most N + 1 series
per other label value.

Guarantee: no write key or email address in a name, label or value; the same
observation and the same :class:`TenantLabels` give the same samples; with one
:class:`TenantLabels` kept across readings (as the Prometheus collector and the
OpenTelemetry instruments keep theirs), no counter series ever decreases.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment.observability._observation import (
    OTHER_TENANTS,
    Observation,
    TenantView,
    top_tenants,
)

__all__ = ["METRICS", "MetricSpec", "Sample", "TenantLabels", "check_tenant_labels", "samples"]


@attrs.frozen
class MetricSpec:
    """One metric: ``name`` (Prometheus base name; a counter is exposed with ``_total``),
    ``kind`` (``counter`` or ``gauge``), ``unit``, ``help``, and its labels besides
    ``tenant``; ``per_tenant`` says whether it takes the ``tenant`` label when enabled."""

    name: str
    kind: str
    unit: str
    help: str
    labels: tuple[str, ...] = ()
    per_tenant: bool = False

    @property
    def otel_name(self) -> str:
        """The OpenTelemetry instrument name (``selligent_segment.events_delivered``)."""
        return self.name.replace("selligent_segment_", "selligent_segment.", 1)


_P = "selligent_segment_"
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(_P + "events_accepted", "counter", "1", "Events emit accepted (this process).",
               per_tenant=True),
    MetricSpec(_P + "events_delivered", "counter", "1", "Events Segment took (this process).",
               per_tenant=True),
    MetricSpec(_P + "events_retried", "counter", "1",
               "Distinct events that needed at least one retry after a transient failure "
               "(this process; each counted once, however many times it was sent again).",
               per_tenant=True),
    MetricSpec(_P + "events_rejected", "counter", "1",
               "Events refused for good, by reason (this process).", ("reason",), True),
    MetricSpec(_P + "events_dropped", "counter", "1",
               "Events accepted then given up, by reason (this process).", ("reason",), True),
    MetricSpec(_P + "events_refused", "counter", "1",
               "Events emit did not accept, by reason (this process).", ("reason",)),
    MetricSpec(_P + "requests", "counter", "1", "HTTP requests sent to Segment (this process)."),
    MetricSpec(_P + "backlog_events", "gauge", "1",
               "Events waiting to be delivered (the spool file's, shared by its processes).",
               per_tenant=True),
    MetricSpec(_P + "leased_events", "gauge", "1",
               "Events being sent right now (spool file only)."),
    MetricSpec(_P + "oldest_event_age_seconds", "gauge", "s",
               "Seconds the oldest waiting event has waited (spool file only).",
               per_tenant=True),
    MetricSpec(_P + "dead_letters", "gauge", "1", "Dead letters kept in the spool file.",
               per_tenant=True),
    MetricSpec(_P + "paused_tenants", "gauge", "1",
               "Tenants paused because their write key was refused or is missing."),
    MetricSpec(_P + "spool_bytes", "gauge", "By",
               "Bytes of the spool file, its WAL and journals (PostgreSQL: its tables on "
               "disk)."),
    MetricSpec(_P + "spool_used_bytes", "gauge", "By",
               "Bytes max_spool_bytes caps: the spool file's pages in use (PostgreSQL: the "
               "queued bodies); compare with spool_max_bytes."),
    MetricSpec(_P + "spool_journal_bytes", "gauge", "By",
               "Bytes of the acceptance journals (until rotation)."),
    MetricSpec(_P + "spool_max_bytes", "gauge", "By", "The emitter's max_spool_bytes."),
    MetricSpec(_P + "spool_processes", "gauge", "1", "Live processes using the spool file."),
    MetricSpec(_P + "spool_up", "gauge", "1",
               "1 when the spool file could be read at this scrape, else 0."),
    MetricSpec(_P + "spool_write_failing", "gauge", "1",
               "1 while the emitter cannot write its spool file (its accepted events "
               "wait in the journal), else 0."),
)  # fmt: skip
_BY_NAME = {spec.name: spec for spec in METRICS}


@attrs.frozen
class Sample:
    """One value of one metric, with its labels (``tenant`` included when enabled)."""

    name: str
    labels: Mapping[str, str]
    value: float


def check_tenant_labels(value: object) -> int:
    """``value`` as a tenant-label cap (0: no tenant label), else ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise ConfigurationError(
            "tenant_labels", f"must be an int from 0 (off) to 1000, got {shown(value)}"
        )
    return value


class TenantLabels:
    """Which tenants have a ``tenant`` label of their own on the counters, decided once
    for the life of this object: at most ``cap`` tenants, never changed after.

    A counter summed over a set of tenants only rises while the set stays the same, so a
    tenant keeps the label it was given, and a tenant first seen while the cap is full is
    summed into ``tenant="other"`` for good. While there is room, the tenants first seen
    get a label, the ones that accepted the most first. Holds at most ``cap`` names.
    Thread-safe.
    """

    def __init__(self, cap: int) -> None:
        self.cap = check_tenant_labels(cap)
        self._kept: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TenantLabels cap={self.cap} kept={len(self._kept)}>"

    def kept(self, tenants: Iterable[TenantView]) -> frozenset[str]:
        """The labelled tenants, after giving the free labels to tenants of ``tenants``
        seen for the first time."""
        with self._lock:
            room = self.cap - len(self._kept)
            if room > 0:
                new = [t for t in tenants if t.tenant not in self._kept | {OTHER_TENANTS}]
                new.sort(key=lambda t: (-t.accepted, t.tenant))
                self._kept.update(t.tenant for t in new[:room])
            return frozenset(self._kept)


def samples(seen: Observation, tenant_labels: int | TenantLabels = 0) -> list[Sample]:
    """Every sample ``seen`` gives, metric by metric in :data:`METRICS` order. Counters
    need an Emitter (``seen.stats``); spool-file gauges need a readable spool file.

    ``tenant_labels``: 0 for no ``tenant`` label; a cap N for the N tenants of this
    observation alone (the counters' tenants then chosen by what they accepted so far:
    a one-off reading); or a :class:`TenantLabels` kept across readings, so that the
    counters' tenants never change and no counter series decreases."""
    chosen = tenant_labels if isinstance(tenant_labels, TenantLabels) else None
    cap = chosen.cap if chosen is not None else check_tenant_labels(tenant_labels)
    out: list[Sample] = []
    add = out.append
    if seen.stats is not None:
        if chosen is None:
            chosen = TenantLabels(cap)
        out += _counters(seen, chosen)
        for reason, n in sorted(seen.stats.refused.items()):
            add(Sample(_P + "events_refused", {"reason": reason}, n))
        add(Sample(_P + "requests", {}, seen.stats.requests))
    known = seen.stats is not None or seen.spool is not None  # else no figure is true
    gauges = _grouped(seen.tenants, cap, lambda t: t.backlog)
    for labels, group in gauges if known else ():
        add(Sample(_P + "backlog_events", labels, sum(t.backlog for t in group)))
    if seen.spool is not None:
        add(Sample(_P + "leased_events", {}, sum(t.leased for t in seen.tenants)))
        for labels, group in gauges:
            ages = [t.oldest_age for t in group if t.oldest_age is not None]
            add(Sample(_P + "oldest_event_age_seconds", labels, max(ages, default=0.0)))
        for labels, group in gauges:
            add(Sample(_P + "dead_letters", labels, sum(t.dead_letters for t in group)))
    if known:
        add(Sample(_P + "paused_tenants", {}, len(seen.paused)))
    if seen.spool is not None:
        add(Sample(_P + "spool_bytes", {}, seen.spool.file_bytes))
        add(Sample(_P + "spool_journal_bytes", {}, seen.spool.journal_bytes))
    if seen.spool_used is not None:
        add(Sample(_P + "spool_used_bytes", {}, seen.spool_used))
    if seen.max_spool_bytes is not None:
        add(Sample(_P + "spool_max_bytes", {}, seen.max_spool_bytes))
    if seen.spool is not None:
        add(Sample(_P + "spool_processes", {}, seen.spool.processes))
    if seen.spool is not None or seen.spool_error is not None:
        add(Sample(_P + "spool_up", {}, 1.0 if seen.spool is not None else 0.0))
    if seen.stats is not None:  # an Emitter's
        add(Sample(_P + "spool_write_failing", {}, 1.0 if seen.spool_unwritable else 0.0))
    order = {spec.name: i for i, spec in enumerate(METRICS)}
    out.sort(key=lambda s: order[s.name])  # stable: labels keep their order
    return out


def _grouped(
    tenants: tuple[TenantView, ...], cap: int, key: Callable[[TenantView], float]
) -> list[tuple[dict[str, str], list[TenantView]]]:
    """``[(labels, tenants)]``: one group of all tenants without tenant labels, else one
    per kept tenant and ``other`` for the rest (only when there is a rest, or no tenant
    at all). A tenant named ``other`` is always in that sum: labelled on its own, its
    series would have the very labels of the sum, and Prometheus would drop one."""
    if cap == 0:
        return [({}, list(tenants))]
    if not tenants:  # still one series, so that an empty spool reads 0, not "no data"
        return [({"tenant": OTHER_TENANTS}, [])]
    kept, rest = top_tenants(tenants, cap, key)
    rest = [*rest, *(t for t in kept if t.tenant == OTHER_TENANTS)]  # see _labelled
    kept = [t for t in kept if t.tenant != OTHER_TENANTS]
    groups = [({"tenant": t.tenant}, [t]) for t in sorted(kept, key=lambda t: t.tenant)]
    if rest:
        groups.append(({"tenant": OTHER_TENANTS}, rest))
    return groups


def _sticky(
    tenants: tuple[TenantView, ...], chosen: TenantLabels
) -> list[tuple[dict[str, str], list[TenantView]]]:
    """Like :func:`_grouped`, but the labelled tenants are ``chosen``'s for good."""
    if chosen.cap == 0:
        return [({}, list(tenants))]
    if not tenants:
        return [({"tenant": OTHER_TENANTS}, [])]
    kept = chosen.kept(tenants) - {OTHER_TENANTS}  # a tenant named so: in the sum (see _grouped)
    groups = [({"tenant": t.tenant}, [t]) for t in tenants if t.tenant in kept]
    rest = [t for t in tenants if t.tenant not in kept]
    if rest:
        groups.append(({"tenant": OTHER_TENANTS}, rest))
    return groups


def _counters(seen: Observation, chosen: TenantLabels) -> Iterable[Sample]:
    for labels, group in _sticky(seen.tenants, chosen):
        for field in ("accepted", "delivered"):
            total = sum(getattr(t, field) for t in group)
            yield Sample(f"{_P}events_{field}", labels, total)
        yield Sample(_P + "events_retried", labels, sum(t.retried_events for t in group))
        for field in ("rejected", "dropped"):
            by_reason: Counter[str] = Counter()
            for t in group:
                by_reason.update(getattr(t, field))
            for reason, n in sorted(by_reason.items()):
                yield Sample(f"{_P}events_{field}", {**labels, "reason": reason}, n)


def spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` named ``name``."""
    return _BY_NAME[name]
