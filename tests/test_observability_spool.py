"""observability/ over the spool as it really is: a damaged spool file under a running
Emitter, a PostgreSQL spool, and how full the spool is by the measure ``emit`` enforces."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from selligent_segment import Emitter
from selligent_segment.delivery._stats import Stats
from selligent_segment.observability import (
    HealthStatus,
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
from selligent_segment.testing._local_postgres import LocalPostgres

KEYS = {"acme": "key-acme", "globex": "key-globex", "initech": "key-initech"}
_schemas = itertools.count(1)


def record(tenant: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "delivered",
        "tenant": tenant,
        "email": f"u{i}@example.com",
        "event_id": f"{tenant}-{i}",
        **extra,
    }


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


def otel_points(source: Emitter | Source) -> dict[str, list[Any]]:
    """The data points of one OpenTelemetry collection over ``source``, by metric name."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_otel_metrics(provider.get_meter("test"), source)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


@pytest.fixture
def segment() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        yield server


# -- a damaged spool file under a running Emitter ---------------------------------------------


def _overwrite(path: Path) -> dict[Path, bytes]:
    """Overwrite the spool file, its WAL and shared memory with garbage (a bad restore);
    their old bytes, to put back."""
    kept: dict[Path, bytes] = {}
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        part = path.with_name(name)
        if part.exists():
            kept[part] = part.read_bytes()
            part.write_bytes(bytes(range(256)) * (len(kept[part]) // 256 + 1))
    return kept


def test_a_damaged_spool_file_is_reported_by_every_reader_of_the_emitter(
    segment: LocalSegment, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    emitter = Emitter(write_keys=KEYS, endpoint=segment.url, spool=str(path), handle_sigterm=False)
    try:
        emitter.emit_many([record("acme", i) for i in range(20)])
        assert emitter.flush(10)
        assert health(emitter).healthy
        kept = _overwrite(path)
        try:
            verdict = health(emitter)
            got = scrape(PrometheusCollector(emitter))
            points = otel_points(emitter)
            seen = Source(emitter).observe()
        finally:
            for part, data in kept.items():
                part.write_bytes(data)
    finally:
        emitter.close(5)
    assert verdict.status is HealthStatus.UNHEALTHY
    assert verdict.reasons[0].startswith("the spool file cannot be read")
    assert "corrupt" in verdict.reasons[0]
    assert verdict.http()[0] == 503
    assert got[("selligent_segment_spool_up", ())] == 0
    assert ("selligent_segment_backlog_events", ()) not in got  # unknown, not a false 0
    assert [p.value for p in points["selligent_segment.spool_up"]] == [0]
    assert seen.stats is None
    assert seen.spool is None
    assert seen.spool_error is not None
    assert str(path) in seen.spool_error


def test_an_emitter_whose_stats_cannot_read_its_spool_is_unhealthy(
    segment: LocalSegment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's own status may still read (say, a damaged page in the queue's index
    only): ``stats()`` failing is enough to report the spool unreadable."""
    from selligent_segment import SpoolError

    emitter = Emitter(
        write_keys=KEYS, endpoint=segment.url, spool=str(tmp_path / "s.db"), handle_sigterm=False
    )

    def broken() -> Stats:
        raise SpoolError("s.db: the spool file is corrupt (database disk image is malformed)")

    try:
        emitter.emit(record("acme", 1))
        assert emitter.flush(10)
        monkeypatch.setattr(emitter, "stats", broken)
        monkeypatch.setattr(emitter, "_stats_now", broken)  # what a check reads
        verdict = health(emitter)
        got = scrape(PrometheusCollector(emitter))
    finally:
        monkeypatch.undo()
        emitter.close(5)
    assert verdict.status is HealthStatus.UNHEALTHY
    assert verdict.reasons == (
        "the spool file cannot be read: s.db: the spool file is corrupt "
        "(database disk image is malformed)",
    )
    assert got[("selligent_segment_spool_up", ())] == 0
    assert ("selligent_segment_events_delivered_total", ()) not in got


# -- a PostgreSQL spool -----------------------------------------------------------------------


@pytest.fixture
def spool_url(postgres: LocalPostgres) -> str:
    """A fresh schema on the session's server, with a password in the URL (the server
    trusts loopback and ignores it): it must never be shown."""
    user, rest = postgres.url.split("://", 1)[1].split("@", 1)
    return f"postgresql://{user}:hunter2-secret@{rest}?spool_schema=obs_test_{next(_schemas)}"


def test_an_emitter_on_a_postgres_spool_is_observed(segment: LocalSegment, spool_url: str) -> None:
    paused = threading.Event()
    emitter = Emitter(
        write_keys=KEYS,
        endpoint=segment.url,
        spool=spool_url,
        handle_sigterm=False,
        on_pause=lambda tenant, reason: paused.set(),
    )
    try:
        emitter.emit(record("acme", 1))
        assert emitter.flush(10)
        emitter.emit_many([record("initech", i) for i in range(4)])  # its key is refused
        assert paused.wait(10)
        verdict = health(emitter)
        mine = scrape(PrometheusCollector(emitter, tenant_labels=5))
        exporter = Source(spool=spool_url)  # another reader of the same schema
        try:
            theirs = scrape(PrometheusCollector(exporter, tenant_labels=5))
            shown = repr(exporter) + repr(health(exporter))
        finally:
            exporter.close()
        points = otel_points(emitter)
    finally:
        emitter.close(0.05)
    assert verdict.status is HealthStatus.DEGRADED
    assert verdict.backlog == 4
    assert any("'initech' is paused" in r for r in verdict.reasons)
    for got in (mine, theirs):
        assert got[("selligent_segment_backlog_events", (("tenant", "initech"),))] == 4
        assert got[("selligent_segment_paused_tenants", ())] == 1
        assert got[("selligent_segment_spool_up", ())] == 1
        assert got[("selligent_segment_spool_used_bytes", ())] > 0
    assert mine[("selligent_segment_events_delivered_total", (("tenant", "acme"),))] == 1
    assert [p.value for p in points["selligent_segment.spool_up"]] == [1]
    assert "hunter2-secret" not in shown + repr(mine) + repr(verdict)
    assert "***" in shown


def test_an_unreachable_postgres_spool_is_reported_without_its_password() -> None:
    url = "postgresql://app:hunter2-secret@127.0.0.1:1/db?spool_schema=gone"
    source = Source(spool=url)
    verdict = health(source)
    got = scrape(PrometheusCollector(source))
    source.close()
    assert verdict.status is HealthStatus.UNHEALTHY
    assert verdict.reasons[0].startswith("the spool file cannot be read")
    assert got == {("selligent_segment_spool_up", ()): 0}
    assert "hunter2-secret" not in repr(verdict) + repr(source)


# -- how full the spool is ----------------------------------------------------------------------


def _used_pages(path: Path) -> int:
    """The bytes of the file's pages in use, read by SQLite itself (what ``emit`` caps)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (used,) = db.execute(
            "SELECT (page_count - freelist_count) * page_size "
            "FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        ).fetchone()
    finally:
        db.close()
    return int(used)


def test_spool_fill_is_the_measure_emit_enforces_not_the_file_size(
    segment: LocalSegment, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    cap = 1024 * 1024
    emitter = Emitter(
        write_keys=KEYS,
        endpoint=segment.url,
        spool=str(path),
        max_spool_bytes=cap,
        handle_sigterm=False,
    )
    try:
        for batch in range(6):  # all delivered: the file keeps its WAL and journal
            emitter.emit_many(
                [record("acme", batch * 250 + i, campaign_name="x" * 400) for i in range(250)]
            )
            assert emitter.flush(30)
        seen = Source(emitter).observe()
        verdict = health(emitter)
        got = scrape(PrometheusCollector(emitter))
        used = _used_pages(path)
    finally:
        emitter.close(5)
    assert emitter.stats().refused == {}  # emit never found the spool full
    assert seen.spool is not None
    assert seen.spool.file_bytes > cap
    assert verdict.healthy, verdict.reasons  # not "the spool file is 700% full"
    assert verdict.spool_fill == pytest.approx(used / cap)
    assert used < cap
    assert seen.spool_used == used
    assert got[("selligent_segment_spool_used_bytes", ())] == used
    assert got[("selligent_segment_spool_bytes", ())] == seen.spool.file_bytes  # kept too


def test_spool_fill_degrades_on_the_used_bytes() -> None:
    def seen(used: int | None) -> Observation:
        return Observation(
            at=1000.0,
            stats=None,
            spool=SpoolStatus("s.db", 50_000, 40_000, 1, ()),
            spool_error=None,
            max_spool_bytes=10_000,
            tenants=(TenantView("a"),),
            spool_used=used,
        )

    assert health(seen(1_000)).healthy  # a large file, little of it used
    full = health(seen(9_500))
    assert full.status is HealthStatus.DEGRADED
    assert full.reasons == ("the spool file is 95% full (threshold 80%)",)
    assert health(seen(None)).spool_fill is None  # unknown: no verdict on it
    by = {s.name: s.value for s in samples(seen(1_000))}
    assert by["selligent_segment_spool_used_bytes"] == 1_000
    assert by["selligent_segment_spool_bytes"] == 50_000
