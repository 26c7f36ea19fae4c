"""Observability: metrics and a health check, computed when asked, from an Emitter's
counters and its spool file.

- :class:`PrometheusCollector` (extra ``prometheus``): a ``prometheus_client`` collector.
- :func:`register_otel_metrics` (extra ``otel``): observable instruments on an
  OpenTelemetry ``Meter``, through ``opentelemetry-api`` only.
- :func:`health` and :class:`HealthThresholds`: healthy, degraded or unhealthy, with the
  reasons; :meth:`Health.http` gives ``(status_code, json_bytes)`` for ``/healthz``.
- :class:`Source` and :class:`Observation`: the reading they all share; ``Source(spool=PATH)``
  reads a spool file alone, for one exporter beside prefork workers.

Neither extra is imported until used. See ``docs/observability.md``.
"""

from __future__ import annotations

from selligent_segment.observability._health import (
    Health,
    HealthStatus,
    HealthThresholds,
    health,
)
from selligent_segment.observability._observation import (
    OTHER_TENANTS,
    Observation,
    Source,
    TenantView,
)
from selligent_segment.observability._otel import register_otel_metrics
from selligent_segment.observability._prometheus import PrometheusCollector
from selligent_segment.observability._samples import (
    METRICS,
    MetricSpec,
    Sample,
    TenantLabels,
    samples,
)

__all__ = [
    "METRICS",
    "OTHER_TENANTS",
    "Health",
    "HealthStatus",
    "HealthThresholds",
    "MetricSpec",
    "Observation",
    "PrometheusCollector",
    "Sample",
    "Source",
    "TenantLabels",
    "TenantView",
    "health",
    "register_otel_metrics",
    "samples",
]
