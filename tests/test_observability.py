"""observability/: samples, the Prometheus collector, OpenTelemetry instruments and the
health check, from real Emitters on a LocalSegment, real spool files, and observations
built by hand where only the arithmetic is under test."""

from __future__ import annotations

import importlib.util
import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from selligent_segment import ConfigurationError, Emitter, SelligentSegmentError
from selligent_segment.delivery._stats import LastError, Stats
from selligent_segment.intake import _backpressure
from selligent_segment.observability import (
    METRICS,
    HealthStatus,
    HealthThresholds,
    Observation,
    PrometheusCollector,
    Source,
    TenantView,
    health,
    register_otel_metrics,
    samples,
)
from selligent_segment.spool._file import SpoolStatus
from selligent_segment.testing import LocalSegment

KEYS = {"acme": "key-acme", "globex": "key-globex", "initech": "key-initech"}


def record(tenant: str, i: int) -> dict[str, Any]:
    return {"type": "delivered", "tenant": tenant, "email": f"u{i}@example.com", "event_id": str(i)}


def scrape(collector: PrometheusCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value, parsed from the text."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def segment() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        yield server


def _emitter(segment: LocalSegment, tmp_path: Path | None = None, **settings: Any) -> Emitter:
    spool = str(tmp_path / "spool.db") if tmp_path is not None else "memory"
    return Emitter(
        write_keys=KEYS, endpoint=segment.url, spool=spool, handle_sigterm=False, **settings
    )


# -- the Prometheus collector over a real Emitter -------------------------------------------


def test_counters_match_what_was_delivered(segment: LocalSegment) -> None:
    with _emitter(segment) as emitter:
        emitter.emit_many([record("acme", i) for i in range(3)] + [record("globex", 9)])
        assert emitter.flush(10)
        got = scrape(PrometheusCollector(emitter))
    assert segment.accepted_count == 4
    assert got[("selligent_segment_events_accepted_total", ())] == 4
    assert got[("selligent_segment_events_delivered_total", ())] == 4
    assert got[("selligent_segment_backlog_events", ())] == 0
    assert got[("selligent_segment_requests_total", ())] >= 1
    assert ("selligent_segment_spool_up", ()) not in got  # a memory spool has no file


def test_spool_gauges_come_from_the_file_and_agree_across_readers(
    segment: LocalSegment, tmp_path: Path
) -> None:
    paused = threading.Event()
    emitter = _emitter(segment, tmp_path, on_pause=lambda tenant, reason: paused.set())
    try:
        emitter.emit(record("acme", 7))
        assert emitter.flush(10)
        # initech's key is refused: its events stay in the file, the tenant paused
        emitter.emit_many([record("initech", i) for i in range(5)])
        assert paused.wait(10)
        mine = scrape(PrometheusCollector(emitter, tenant_labels=5))
        exporter = Source(spool=tmp_path / "spool.db")  # another reader of the same file
        theirs = scrape(PrometheusCollector(exporter, tenant_labels=5))
        exporter.close()
    finally:
        emitter.close(0.05)
    for got in (mine, theirs):
        assert got[("selligent_segment_backlog_events", (("tenant", "initech"),))] == 5
        assert got[("selligent_segment_oldest_event_age_seconds", (("tenant", "initech"),))] >= 0
        assert got[("selligent_segment_paused_tenants", ())] == 1
        assert got[("selligent_segment_spool_up", ())] == 1
        assert got[("selligent_segment_spool_processes", ())] == 1
    assert mine[("selligent_segment_backlog_events", (("tenant", "acme"),))] == 0
    assert mine[("selligent_segment_events_delivered_total", (("tenant", "acme"),))] == 1
    assert mine[("selligent_segment_events_accepted_total", (("tenant", "initech"),))] == 5
    assert ("selligent_segment_events_delivered_total", ()) not in theirs  # no counters
    assert "key-initech" not in repr(mine)


def test_an_unreadable_spool_file_is_reported_not_raised(tmp_path: Path) -> None:
    source = Source(spool=tmp_path / "missing.db")
    got = scrape(PrometheusCollector(source))
    assert got == {("selligent_segment_spool_up", ()): 0}  # no backlog figure, no false 0
    verdict = health(source)
    assert verdict.status is HealthStatus.UNHEALTHY
    assert verdict.reasons[0].startswith("the spool file cannot be read")
    assert verdict.http()[0] == 503


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, segment: LocalSegment) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return (
            None
            if name.split(".")[0] in ("prometheus_client", "opentelemetry")
            else real(name, *args)
        )

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    source = Source(spool="memory-is-not-a-file.db")
    with pytest.raises(ConfigurationError, match=r"pip install 'selligent-segment\[prometheus\]'"):
        PrometheusCollector(source)
    with pytest.raises(ConfigurationError) as otel:
        register_otel_metrics(object(), source)  # type: ignore[arg-type]
    assert otel.value.setting == "otel"


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError) as labels:
        PrometheusCollector(Source(spool="x.db"), tenant_labels=-1)
    assert labels.value.setting == "tenant_labels"
    with pytest.raises(ConfigurationError) as nothing:
        Source()
    assert nothing.value.setting == "spool"
    with pytest.raises(ConfigurationError) as share:
        HealthThresholds(max_spool_fill=1.5)
    assert share.value.setting == "max_spool_fill"
    with pytest.raises(ConfigurationError) as age:
        HealthThresholds(max_oldest_age=0)
    assert age.value.setting == "max_oldest_age"


# -- the tenant-label cap, on observations built by hand -------------------------------------


def _seen(*tenants: TenantView, at: float = 1000.0, **fields: Any) -> Observation:
    stats = Stats(
        accepted=sum(t.accepted for t in tenants),
        delivered=sum(t.delivered for t in tenants),
        retried=0,
        queued=sum(t.backlog for t in tenants),
        rejected={},
        dropped={},
        refused={"spool_full": 2},
        requests=7,
        tenants={},
    )
    values: dict[str, Any] = {
        "at": at,
        "stats": stats,
        "spool": SpoolStatus("s.db", 1000, 10, 2, ()),
        "spool_error": None,
        "max_spool_bytes": 10_000,
        "tenants": tenants,
    }
    values.update(fields)
    return Observation(**values)


def test_tenant_labels_are_capped_with_an_other_bucket() -> None:
    tenants = tuple(
        TenantView(f"t{i}", backlog=i, oldest_age=float(i), accepted=100 - i, delivered=1)
        for i in range(10)
    )
    seen = _seen(*tenants)
    by = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(seen, 3)}
    backlog = {k[1]: v for k, v in by.items() if k[0] == "selligent_segment_backlog_events"}
    assert backlog == {
        (("tenant", "t7"),): 7,
        (("tenant", "t8"),): 8,
        (("tenant", "t9"),): 9,
        (("tenant", "other"),): sum(range(7)),
    }
    oldest = by[("selligent_segment_oldest_event_age_seconds", (("tenant", "other"),))]
    assert oldest == 6.0  # the maximum of the rest, not a sum
    accepted = {k[1]: v for k, v in by.items() if k[0] == "selligent_segment_events_accepted"}
    assert set(accepted) == {(("tenant", t),) for t in ("t0", "t1", "t2", "other")}
    assert sum(accepted.values()) == sum(100 - i for i in range(10))
    # without tenant labels: one series per metric, the totals
    flat = {(s.name, tuple(s.labels.items())): s.value for s in samples(seen)}
    assert flat[("selligent_segment_backlog_events", ())] == sum(range(10))
    assert flat[("selligent_segment_events_refused", (("reason", "spool_full"),))] == 2
    assert {s.name for s in samples(seen)} <= {spec.name for spec in METRICS}


def test_a_tenant_named_other_is_counted_in_the_other_series_never_beside_it() -> None:
    # Labelled on its own, a tenant named "other" gave a series with the very labels of
    # the sum of the unlabelled ones, and Prometheus dropped one of the two samples.
    seen = _seen(
        TenantView("other", backlog=5, accepted=50),
        TenantView("acme", backlog=1, accepted=10),
        TenantView("globex", backlog=2, accepted=1),
    )
    for cap in (1, 2, 5):
        backlog = [
            (tuple(sorted(s.labels.items())), s.value)
            for s in samples(seen, cap)
            if s.name == "selligent_segment_backlog_events"
        ]
        labels = [labels for labels, _ in backlog]
        assert len(labels) == len(set(labels)), labels  # no two series alike
        assert sum(value for _, value in backlog) == 8
        assert (("tenant", "other"),) in labels


def test_no_other_bucket_when_every_tenant_fits() -> None:
    seen = _seen(TenantView("a", backlog=1), TenantView("b"))
    labels = {s.labels["tenant"] for s in samples(seen, 5) if "tenant" in s.labels}
    assert labels == {"a", "b"}


# -- health -----------------------------------------------------------------------------------


def test_healthy_when_nothing_waits_long() -> None:
    verdict = health(_seen(TenantView("a", backlog=3, oldest_age=2.0)))
    assert verdict.healthy
    assert verdict.reasons == ()
    status, body = verdict.http()
    assert status == 200
    assert orjson.loads(body)["status"] == "healthy"


def test_degraded_reasons() -> None:
    error = LastError(text="HTTP 503: overloaded", at=990.0, status=503)
    old_error = LastError(text="HTTP 500", at=100.0, status=500)
    seen = _seen(
        TenantView("slow", backlog=4, oldest_age=1200.0, last_error=error),
        TenantView("done", backlog=0, last_error=error),  # delivered since: not a reason
        TenantView("stale", backlog=1, last_error=old_error),  # outside the window
        TenantView("locked", backlog=2, paused="write key refused (401)", last_error=error),
        spool=SpoolStatus("s.db", 9_000, 0, 1, ()),
        spool_used=9_000,
    )
    verdict = health(seen)
    assert verdict.status is HealthStatus.DEGRADED
    assert verdict.reasons == (
        "the oldest waiting event has waited 1200 s (threshold 900 s)",
        "the spool file is 90% full (threshold 80%)",
        "tenant 'locked' is paused: write key refused (401)",
        "tenant 'slow' has 4 events waiting; last error 10 s ago: HTTP 503: overloaded",
    )
    assert (verdict.backlog, verdict.paused, verdict.oldest_age) == (7, 1, 1200.0)
    assert verdict.http()[0] == 503
    assert verdict.http(degraded_status=200)[0] == 200
    relaxed = HealthThresholds(
        max_oldest_age=3600, max_spool_fill=0.95, paused_degrades=False, error_window=5
    )
    assert health(seen, relaxed).healthy


def test_reasons_are_capped() -> None:
    many = tuple(TenantView(f"t{i:03}", backlog=1, paused="no write key") for i in range(50))
    verdict = health(_seen(*many), HealthThresholds(max_reasons=3))
    assert len(verdict.reasons) == 4
    assert verdict.reasons[-1] == "and 47 more"


def test_a_closed_emitter_is_unhealthy(segment: LocalSegment) -> None:
    emitter = _emitter(segment)
    assert health(emitter).healthy
    emitter.close()
    verdict = health(emitter)
    assert verdict.status is HealthStatus.UNHEALTHY
    assert verdict.reasons == ("the emitter is closed",)


def test_a_paused_tenant_degrades_a_real_emitter(segment: LocalSegment, tmp_path: Path) -> None:
    paused = threading.Event()
    emitter = _emitter(segment, tmp_path, on_pause=lambda tenant, reason: paused.set())
    try:
        emitter.emit(record("initech", 1))
        assert paused.wait(10)
        verdict = health(emitter)
    finally:
        emitter.close(0.05)
    assert verdict.status is HealthStatus.DEGRADED
    assert any(r.startswith("tenant 'initech' is paused") for r in verdict.reasons)
    text = repr(verdict) + verdict.http()[1].decode()
    assert "key-initech" not in text
    assert "u1@example.com" not in text


def test_a_spool_file_the_emitter_cannot_write_degrades_health_at_once(
    segment: LocalSegment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process held the file's write lock: the events went to the journal only,
    and health said ``healthy`` with no backlog (each check waiting 25 s for the
    emitter's spool) while nothing was delivered. A write waiting longer than
    ``WRITE_STALL`` (5 s) counts as failing; the busy timeout (30 s) is left as it is."""
    monkeypatch.setattr(_backpressure, "WRITE_STALL", 0.05)
    emitter = _emitter(segment, tmp_path)
    try:
        emitter.emit(record("acme", 1))
        assert emitter.flush(10)
        locker = sqlite3.connect(tmp_path / "spool.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        emitter.emit(record("acme", 2))
        deadline = time.monotonic() + 10
        while not emitter._spool_unwritable() and time.monotonic() < deadline:
            time.sleep(0.005)  # polling the encoder's state: nothing signals it
        with monkeypatch.context() as waits:  # stats() waits for the spool: not called
            waits.setattr(emitter, "stats", _never)
            waits.setattr(emitter._intake.spool, "stats", _never)
            verdict = health(emitter)
            got = scrape(PrometheusCollector(emitter))
        locker.execute("ROLLBACK")
        locker.close()
        assert emitter.flush(10)
        after = health(emitter)
    finally:
        emitter.close(0.05)
    assert verdict.status is HealthStatus.DEGRADED
    assert verdict.reasons == (
        "the spool file cannot be written: accepted events wait in the journal "
        "(the emitter keeps trying)",
    )
    assert got[("selligent_segment_spool_write_failing", ())] == 1.0
    assert got[("selligent_segment_events_accepted_total", ())] >= 1.0
    assert after.healthy


def test_a_check_never_waits_for_a_write_that_holds_the_spool(
    segment: LocalSegment, tmp_path: Path
) -> None:
    """Any write holds the spool while it waits for another process's lock (an ack, a
    lease, upkeep: up to 30 s), and ``stats()`` waits for it: a check did too."""
    emitter = _emitter(segment, tmp_path)
    verdicts: list[Any] = []
    try:
        emitter.emit(record("acme", 1))
        assert emitter.flush(10)
        with emitter._intake.spool._lock:  # a write under way
            checker = threading.Thread(target=lambda: verdicts.append(health(emitter)))
            checker.start()
            checker.join(10)
            assert not checker.is_alive(), "the check waited for the spool"
    finally:
        emitter.close(5)
    assert verdicts[0].healthy


def _never() -> None:
    raise AssertionError("stats() called: it waits for a spool the encoder holds")


# -- OpenTelemetry ------------------------------------------------------------------------------


def test_otel_instruments_report_the_same_values(segment: LocalSegment, tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with _emitter(segment, tmp_path) as emitter:
        emitter.emit_many([record("acme", i) for i in range(3)])
        assert emitter.flush(10)
        source = Source(emitter)
        reads = 0
        observe = source.observe

        def counted() -> Observation:
            nonlocal reads
            reads += 1
            return observe()

        source.observe = counted  # type: ignore[method-assign]
        instruments = register_otel_metrics(provider.get_meter("test"), source)
        data = reader.get_metrics_data()
    provider.shutdown()
    assert len(instruments) == len(METRICS)
    assert reads == 1  # one observation served every callback of the collection
    points: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    (delivered,) = points["selligent_segment.events_delivered"]
    assert delivered.value == 3
    assert points["selligent_segment.backlog_events"][0].value == 0
    assert points["selligent_segment.spool_up"][0].value == 1
    assert points["selligent_segment.oldest_event_age_seconds"][0].value == 0


def test_wrong_arguments_are_named(segment: LocalSegment) -> None:
    with pytest.raises(ConfigurationError) as emitter:
        Source("not an emitter")  # type: ignore[arg-type]
    assert emitter.value.setting == "emitter"
    with pytest.raises(ConfigurationError) as target:
        health("nothing")  # type: ignore[arg-type]
    assert target.value.setting == "target"
    with pytest.raises(ConfigurationError) as limits:
        health(_seen(), "strict")  # type: ignore[arg-type]
    assert limits.value.setting == "thresholds"
    with pytest.raises(ConfigurationError) as cache:
        register_otel_metrics(object(), Source(spool="x.db"), cache_seconds=-1)  # type: ignore[arg-type]
    assert cache.value.setting == "cache_seconds"
    with pytest.raises(ConfigurationError) as reasons:
        HealthThresholds(max_reasons=0)
    assert reasons.value.setting == "max_reasons"
    with pytest.raises(ConfigurationError) as flag:
        HealthThresholds(paused_degrades="yes")  # type: ignore[arg-type]
    assert flag.value.setting == "paused_degrades"


def test_a_memory_emitter_reports_its_own_queue(segment: LocalSegment) -> None:
    emitter = _emitter(segment)
    try:
        source = Source(emitter)
        assert "spool=None" in repr(source)
        segment.outage(503)
        emitter.emit(record("acme", 1))
        assert emitter.flush(0.05) is False  # sent now, refused: in the spool for a retry
        assert segment.wait_for_requests(1)
        seen = source.observe()
        names = {s.name for s in samples(seen)}
    finally:
        emitter.close(0.05)  # reported unsent_at_close: nothing to wait for
    assert seen.stats is not None
    assert seen.backlog == 1
    assert "selligent_segment_oldest_event_age_seconds" not in names  # no file: no age
    assert "selligent_segment_spool_up" not in names


# -- counters stay monotonic while the top tenants change -----------------------------------


class _Replay(Source):
    """A Source that serves the observations it is given, one per read."""

    def __init__(self, *seen: Observation) -> None:
        super().__init__(spool="never-opened.db")
        self._seen = list(seen)

    def observe(self) -> Observation:
        return self._seen.pop(0)


def _counting(name: str, accepted: int, rejected: int, *, new: int = 0) -> TenantView:
    return TenantView(
        name,
        accepted=accepted,
        delivered=accepted - rejected,
        rejected={"rejected": rejected} if rejected else {},
        dropped={"unsent_at_close": new} if new else {},
    )


def _order_changes() -> list[Observation]:
    """Scrapes in which b overtakes a, then c appears and overtakes both."""
    return [
        _seen(_counting("a", 10, 1), _counting("b", 5, 2)),
        _seen(_counting("a", 11, 1), _counting("b", 30, 2)),
        _seen(_counting("a", 12, 1), _counting("b", 31, 3), _counting("c", 90, 4, new=1)),
        _seen(_counting("a", 80, 1), _counting("b", 31, 3), _counting("c", 95, 4, new=2)),
    ]


def test_counters_never_decrease_while_the_top_tenants_change() -> None:
    collector = PrometheusCollector(_Replay(*_order_changes()), tenant_labels=1)
    scrapes = [scrape(collector) for _ in range(4)]
    for before, after in itertools.pairwise(scrapes):
        for key, value in before.items():
            if key[0].endswith("_total"):
                assert after.get(key, 0.0) >= value, (key, value, after.get(key))
    last = scrapes[-1]
    rejected = {
        k[1]: v for k, v in last.items() if k[0] == "selligent_segment_events_rejected_total"
    }
    assert rejected == {  # a keeps its label; b and c, beyond the cap, are "other" for good
        (("reason", "rejected"), ("tenant", "a")): 1,
        (("reason", "rejected"), ("tenant", "other")): 7,
    }


def test_otel_counters_never_decrease_while_the_top_tenants_change() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    now = [0.0]
    register_otel_metrics(
        provider.get_meter("test"),
        _Replay(*_order_changes()),
        tenant_labels=1,
        clock=lambda: now[0],
    )
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for _ in range(4):
        now[0] += 1.0  # one observation per collection
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "selligent_segment.events_rejected":
                        continue
                    for point in metric.data.data_points:
                        key = (metric.name, tuple(sorted(point.attributes.items())))
                        assert point.value >= seen.get(key, 0), key
                        seen[key] = point.value
    provider.shutdown()
    assert (
        seen[("selligent_segment.events_rejected", (("reason", "rejected"), ("tenant", "a")))] == 1
    )


def test_a_process_counts_what_it_delivered_of_another_process_events(
    segment: LocalSegment, tmp_path: Path
) -> None:
    segment.outage(503)
    writer = _emitter(segment, tmp_path)
    writer.emit_many([record("acme", i) for i in range(3)])
    writer.close(0)  # nothing delivered: the events stay in the file
    segment.end_outage()
    with _emitter(segment, tmp_path) as sender:  # accepts nothing, delivers the 3
        assert sender.flush(10)
        assert segment.accepted_count == 3
        flat = scrape(PrometheusCollector(sender))
        labelled = scrape(PrometheusCollector(sender, tenant_labels=2))
    assert flat[("selligent_segment_events_delivered_total", ())] == 3
    assert labelled[("selligent_segment_events_delivered_total", (("tenant", "acme"),))] == 3


def test_events_retried_counts_distinct_events_not_resends(segment: LocalSegment) -> None:
    from selligent_segment import BatchPolicy, RetryPolicy

    fast = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_attempts=50)
    with _emitter(segment, retry=fast, batch=BatchPolicy(linger=0.0)) as emitter:
        segment.outage(503)
        emitter.emit_many([record("acme", i) for i in range(2)])
        assert segment.wait_for_requests(4)  # the batch was sent at least 4 times
        segment.end_outage()
        assert emitter.flush(10)
        stats = emitter.stats()
        got = scrape(PrometheusCollector(emitter, tenant_labels=1))
    assert stats.retried_events == 2 < stats.retried
    assert got[("selligent_segment_events_retried_total", (("tenant", "acme"),))] == 2
    (spec,) = [m for m in METRICS if m.name == "selligent_segment_events_retried"]
    assert "distinct" in spec.help.lower()


def test_health_of_an_emitter_opens_its_spool_file_once(
    segment: LocalSegment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selligent_segment.observability import _observation
    from selligent_segment.spool._file import SpoolFile

    opened: list[SpoolFile] = []

    class Counted(SpoolFile):
        def __init__(self, spool: Any) -> None:
            super().__init__(spool)
            opened.append(self)

    monkeypatch.setattr(_observation, "SpoolFile", Counted)
    emitter = _emitter(segment, tmp_path)
    try:
        emitter.emit(record("acme", 1))
        assert emitter.flush(10)
        for _ in range(5):  # a load balancer probing every second
            assert health(emitter).healthy
        assert len(opened) == 1
        assert opened[0].status().queued == 0  # kept open between probes
    finally:
        emitter.close(0.05)
    verdict = health(emitter)
    assert verdict.reasons == ("the emitter is closed",)
    with pytest.raises(SelligentSegmentError, match="closed"):
        opened[0].status()  # the kept connection went with the emitter
