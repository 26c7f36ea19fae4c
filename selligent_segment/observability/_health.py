"""Whether delivery is healthy, and why not: for a ``/healthz`` endpoint or a check.

:func:`health` reads one :class:`~selligent_segment.observability.Observation` and
compares it with :class:`HealthThresholds`; :meth:`Health.http` renders the answer as
``(status_code, json_bytes)``, which any framework (ASGI, WSGI, ``http.server``) can
send as it is.

Guarantee: a reason names tenants and figures, never a write key or an email address
(pause reasons and last errors are the library's own key-free texts); at most
``HealthThresholds.max_reasons`` reasons are listed, then how many more there were.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs
import orjson

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError, shown
from selligent_segment.observability._observation import Observation, Source, emitter_source

__all__ = ["Health", "HealthStatus", "HealthThresholds", "health"]


class HealthStatus(str, enum.Enum):
    """``healthy``; ``degraded`` (events wait longer than they should, but are kept);
    ``unhealthy`` (the emitter is closed, or its spool file cannot be read)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(attribute.name, f"expected seconds, got {shown(value)}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(attribute.name, "must be a positive, finite number of seconds")


def _share(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigurationError(attribute.name, f"must be a share in (0, 1], got {shown(value)}")


def _count(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(attribute.name, f"must be a positive int, got {shown(value)}")


def _flag(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(attribute.name, f"must be True or False, got {shown(value)}")


@attrs.frozen(kw_only=True)
class HealthThresholds:
    """When :func:`health` says ``degraded``; checked when made (ConfigurationError
    names the field)."""

    max_oldest_age: float = attrs.field(default=900.0, validator=_seconds)
    """Degraded when an event has waited longer than this many seconds (15 minutes:
    with the default batching an event normally waits well under a second; a Segment
    outage, a 429 storm or a stuck sender shows here first)."""
    max_spool_fill: float = attrs.field(default=0.8, validator=_share)
    """Degraded when the spool uses more than this share of ``max_spool_bytes``, by the
    measure ``emit`` enforces (a file's pages in use, not its size on disk; PostgreSQL's
    queued bodies): at 100 % ``emit`` refuses events."""
    paused_degrades: bool = attrs.field(default=True, validator=_flag)
    """Degraded while a tenant is paused (its write key refused or missing: its events
    are kept, not sent)."""
    error_window: float = attrs.field(default=300.0, validator=_seconds)
    """Degraded when a tenant with events waiting had a delivery error in the last this
    many seconds (5 minutes)."""
    max_reasons: int = attrs.field(default=10, validator=_count)
    """Reasons listed at most (then ``and N more``), so thousands of paused tenants make
    one short answer."""


@attrs.frozen
class Health:
    """The verdict: ``status``, the ``reasons`` behind it (empty when healthy), and the
    figures it was made from (``backlog``, ``oldest_age`` in seconds, ``paused`` count,
    ``spool_fill`` share), read at ``at`` (Unix time)."""

    status: HealthStatus
    reasons: tuple[str, ...]
    at: float
    backlog: int
    oldest_age: float | None
    paused: int
    spool_fill: float | None

    @property
    def healthy(self) -> bool:
        """True when ``status`` is ``healthy``."""
        return self.status is HealthStatus.HEALTHY

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "status": self.status.value,
            "reasons": list(self.reasons),
            "at": self.at,
            "backlog": self.backlog,
            "oldest_age": self.oldest_age,
            "paused": self.paused,
            "spool_fill": self.spool_fill,
        }

    def http(self, *, degraded_status: int = 503) -> tuple[int, bytes]:
        """``(status_code, body)`` for a ``/healthz`` answer (``Content-Type:
        application/json``): 200 when healthy, ``degraded_status`` when degraded (pass
        200 for a liveness probe, which must not restart a process over a Segment
        outage), 503 when unhealthy."""
        if self.status is HealthStatus.HEALTHY:
            code = 200
        elif self.status is HealthStatus.DEGRADED:
            code = degraded_status
        else:
            code = 503
        return code, orjson.dumps(self.to_dict())


def health(
    target: Emitter | Source | Observation,
    thresholds: HealthThresholds | None = None,
) -> Health:
    """The health of ``target`` (an Emitter, a :class:`Source`, or an observation already
    taken) against ``thresholds`` (default :class:`HealthThresholds`).

    Cheap enough to probe every second: for an Emitter with a spool file, the file is
    opened at the first check and kept open while the Emitter runs (closed with it), so
    a check costs one ``stats()`` and one grouped scan of the file."""
    limits = thresholds if thresholds is not None else HealthThresholds()
    if not isinstance(limits, HealthThresholds):
        raise ConfigurationError("thresholds", "expected a HealthThresholds")
    if isinstance(target, Observation):
        seen = target
    elif isinstance(target, Source):
        seen = target.observe()
    elif isinstance(target, Emitter):
        source = emitter_source(target)  # the spool file opened once, kept while it runs
        try:
            seen = source.observe()
        finally:
            source.close()
    else:
        raise ConfigurationError("target", "expected an Emitter, a Source or an Observation")
    return _judge(seen, limits)


def _judge(seen: Observation, limits: HealthThresholds) -> Health:
    fatal: list[str] = []
    reasons: list[str] = []
    if seen.closed:
        fatal.append("the emitter is closed")
    if seen.spool_error is not None:
        fatal.append(f"the spool file cannot be read: {seen.spool_error}")
    if seen.spool_unwritable:
        reasons.append(
            "the spool file cannot be written: accepted events wait in the journal "
            "(the emitter keeps trying)"
        )
    oldest = seen.oldest_age
    if oldest is not None and oldest > limits.max_oldest_age:
        reasons.append(
            f"the oldest waiting event has waited {oldest:.0f} s "
            f"(threshold {limits.max_oldest_age:g} s)"
        )
    fill = seen.spool_fill
    if fill is not None and fill > limits.max_spool_fill:
        reasons.append(f"the spool file is {fill:.0%} full (threshold {limits.max_spool_fill:.0%})")
    paused = seen.paused
    if limits.paused_degrades:
        reasons.extend(f"tenant {tenant!r} is paused: {why}" for tenant, why in paused.items())
    for view in seen.tenants:
        error = view.last_error
        if error is None or view.backlog == 0 or view.paused is not None:
            continue
        age = seen.at - error.at
        if age <= limits.error_window:
            reasons.append(
                f"tenant {view.tenant!r} has {view.backlog} events waiting; "
                f"last error {max(age, 0.0):.0f} s ago: {error.text}"
            )
    listed = fatal + reasons
    if len(listed) > limits.max_reasons:
        more = len(listed) - limits.max_reasons
        listed = [*listed[: limits.max_reasons], f"and {more} more"]
    if fatal:
        status = HealthStatus.UNHEALTHY
    elif reasons:
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    return Health(
        status=status,
        reasons=tuple(listed),
        at=seen.at,
        backlog=seen.backlog,
        oldest_age=oldest,
        paused=len(paused),
        spool_fill=fill,
    )
