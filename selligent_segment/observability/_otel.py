"""OpenTelemetry metrics through ``opentelemetry-api`` only (the ``otel`` extra).

:func:`register_otel_metrics` creates one observable instrument per metric of
:data:`~selligent_segment.observability._samples.METRICS` on a ``Meter`` the application
owns (its SDK, exporters and resource are the application's business). The callbacks of
one collection share one observation: it is read at most once per ``cache_seconds``.

Guarantee: ``opentelemetry`` is imported only when called (a clear ConfigurationError
names the extra when missing); a callback never raises for an unreadable spool file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError
from selligent_segment.observability._observation import Source
from selligent_segment.observability._prometheus import require
from selligent_segment.observability._samples import (
    METRICS,
    MetricSpec,
    Sample,
    TenantLabels,
    samples,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["register_otel_metrics"]


class _Cached:
    """The samples of the last observation, kept ``ttl`` seconds (one read serves the
    callbacks of one collection)."""

    def __init__(
        self,
        source: Source,
        tenant_labels: TenantLabels,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self._source = source
        self._tenant_labels = tenant_labels
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._samples: list[Sample] = []

    def of(self, name: str) -> list[Sample]:
        with self._lock:
            now = self._clock()
            if now - self._at >= self._ttl:
                self._samples = samples(self._source.observe(), self._tenant_labels)
                self._at = now
            return [s for s in self._samples if s.name == name]


def register_otel_metrics(
    meter: Meter,
    source: Emitter | Source,
    *,
    tenant_labels: int = 0,
    cache_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[Any]:
    """Register the library's metrics as observable instruments on ``meter``; returns
    them. Counters become observable counters (cumulative, this process's), gauges
    observable gauges; names are ``selligent_segment.<name>`` (``events_delivered``,
    ``backlog_events``...), with the same ``reason`` and capped ``tenant`` attributes
    as the Prometheus collector (the counters' tenants chosen once for good, so that no
    counter decreases)."""
    require("opentelemetry.metrics", "otel")
    cap = TenantLabels(tenant_labels)
    if isinstance(cache_seconds, bool) or not isinstance(cache_seconds, (int, float)):
        raise ConfigurationError("cache_seconds", "expected a number of seconds")
    if cache_seconds < 0:
        raise ConfigurationError("cache_seconds", "must be 0 or more")
    wrapped = source if isinstance(source, Source) else Source(source)
    cached = _Cached(wrapped, cap, float(cache_seconds), clock)
    instruments: list[Any] = []
    for spec in METRICS:
        callback = _callback(cached, spec)
        if spec.kind == "counter":
            instruments.append(
                meter.create_observable_counter(
                    spec.otel_name, callbacks=[callback], unit=spec.unit, description=spec.help
                )
            )
        else:
            instruments.append(
                meter.create_observable_gauge(
                    spec.otel_name, callbacks=[callback], unit=spec.unit, description=spec.help
                )
            )
    return instruments


def _callback(
    cached: _Cached, spec: MetricSpec
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.value, dict(s.labels)) for s in cached.of(spec.name)]

    return observe
