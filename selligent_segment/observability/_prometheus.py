"""A Prometheus collector, computed at scrape time (the ``prometheus`` extra).

Nothing is counted twice: each scrape takes one observation (the Emitter's counters, the
spool file's backlog) and turns :func:`~selligent_segment.observability._samples.samples`
into metric families. Register it once: ``REGISTRY.register(PrometheusCollector(emitter))``.

Guarantee: ``prometheus_client`` is imported only when a collector is made (a clear
:class:`~selligent_segment.ConfigurationError` says which extra to install when it is
missing); a scrape never raises for an unreadable spool file (``spool_up`` is 0).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError
from selligent_segment.observability._observation import Source
from selligent_segment.observability._samples import METRICS, TenantLabels, samples

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["PrometheusCollector", "require"]


def require(module: str, extra: str) -> None:
    """ConfigurationError naming the extra to install when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigurationError(
            extra,
            f"needs {module}: pip install 'selligent-segment[{extra}]'",
        )


class PrometheusCollector:
    """A ``prometheus_client`` custom collector over an Emitter, a spool file, or both.

    ``source`` is an :class:`~selligent_segment.Emitter` or a
    :class:`~selligent_segment.observability.Source` (``Source(spool=PATH)`` for an
    exporter that reads a spool file alone). ``tenant_labels`` (default 0: none) puts a
    ``tenant`` label on at most that many tenants per metric, the rest summed into
    ``tenant="other"``: the gauges label the tenants with the largest backlog at each
    scrape, the counters the same tenants for the collector's life (the first ones to
    count, up to the cap), so that no counter series ever decreases. Counters are this
    process's; spool gauges are the file's, the same in every process sharing it (see
    ``docs/observability.md`` for prefork servers).
    """

    def __init__(self, source: Emitter | Source, *, tenant_labels: int = 0) -> None:
        require("prometheus_client", "prometheus")
        self._source = source if isinstance(source, Source) else Source(source)
        self._tenant_labels = TenantLabels(tenant_labels)

    def __repr__(self) -> str:
        return f"<PrometheusCollector {self._source!r} tenant_labels={self._tenant_labels.cap}>"

    def describe(self) -> list[Metric]:
        """Nothing: the registry then does not scrape at registration time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One observation, as metric families (only the metrics that have samples)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for sample in samples(self._source.observe(), self._tenant_labels):
            by_name.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        for spec in METRICS:
            rows = by_name.get(spec.name)
            if not rows:
                continue
            names = sorted({key for labels, _ in rows for key in labels})
            family: Metric
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=names)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=names)
            for labels, value in rows:
                family.add_metric([labels.get(n, "") for n in names], value)
            yield family
