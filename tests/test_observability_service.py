"""examples/metrics_service.py run for real: a service process and an exporter process on
one spool file, scraped over HTTP, their figures checked against a LocalSegment."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from selligent_segment.testing import LocalSegment

ROOT = Path(__file__).resolve().parent.parent
SERVICE = [sys.executable, str(ROOT / "examples" / "metrics_service.py")]

pytestmark = pytest.mark.slow  # processes


class Service:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.host, self.port = host, int(port)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, as scraped."""
        status, text = self.request("GET", "/metrics")
        assert status == 200
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.request("GET", "/healthz")
        return status, json.loads(body)


def _start(*args: str) -> Service:
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    proc = subprocess.Popen(
        [*SERVICE, "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "the service did not start"
    first = proc.stdout.readline()
    assert first.startswith("LISTENING http://127.0.0.1:"), first + proc.stderr.read()
    return Service(proc, first.split()[1])


def _stop(service: Service) -> int:
    if service.proc.poll() is None:
        service.proc.send_signal(signal.SIGTERM)
    service.proc.communicate(timeout=30)
    return service.proc.returncode


def until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Another process's state can only be polled: ``check`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def segment() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        yield server


def events(tenant: str, first: int, count: int) -> list[dict[str, object]]:
    return [
        {"type": "opened", "tenant": tenant, "email": f"u{i}@example.com", "event_id": str(i)}
        for i in range(first, first + count)
    ]


def test_the_metrics_scraped_match_what_was_emitted_and_delivered(
    segment: LocalSegment, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"acme": "key-acme", "globex": "key-globex"}))
    spool = str(tmp_path / "spool.db")
    service = _start(
        "--spool", spool, "--write-keys", str(keys), "--endpoint", segment.url,
        "--tenant-labels", "5",
    )  # fmt: skip
    exporter = _start("--spool", spool, "--exporter-only", "--tenant-labels", "5")
    try:
        # delivered: the counters say what LocalSegment received
        assert (
            service.request("POST", "/events", events("acme", 0, 4) + events("globex", 10, 2))[0]
            == 202
        )
        assert service.request("POST", "/flush") == (200, b'{"flushed": true}')
        got = service.metrics()
        assert segment.accepted_count == 6
        assert got["selligent_segment_events_delivered_total{tenant=acme}"] == 4
        assert got["selligent_segment_events_delivered_total{tenant=globex}"] == 2
        assert got["selligent_segment_events_accepted_total{tenant=acme}"] == 4
        assert got["selligent_segment_backlog_events{tenant=acme}"] == 0
        assert service.health()[0] == 200

        # an outage: the backlog, read from the shared file, is the same in both processes
        segment.outage(503)
        assert service.request("POST", "/events", events("acme", 20, 3))[0] == 202

        def backlog_of(s: Service) -> float:
            return s.metrics().get("selligent_segment_backlog_events{tenant=acme}", -1)

        assert until(lambda: backlog_of(service) == 3)
        assert backlog_of(exporter) == 3
        exported = exporter.metrics()
        assert exported["selligent_segment_spool_processes"] == 1  # the exporter emits nothing
        assert not any(name.startswith("selligent_segment_events_") for name in exported)
        assert until(lambda: service.health()[0] == 503)
        _, verdict = service.health()
        assert verdict["status"] == "degraded"
        assert verdict["backlog"] == 3
        assert any("tenant 'acme' has 3 events waiting" in r for r in verdict["reasons"])
        assert "key-acme" not in json.dumps(verdict)
        # the exporter emits nothing, yet reads the worker's last error from the file
        exporter_status, exported_verdict = exporter.health()
        assert (exporter_status, exported_verdict["backlog"]) == (503, 3)
        assert any("tenant 'acme' has 3 events waiting" in r for r in exported_verdict["reasons"])

        # the outage ends: everything delivered, both processes see the file empty
        segment.end_outage()
        assert service.request("POST", "/flush") == (200, b'{"flushed": true}')
        assert segment.accepted_count == 9
        got = service.metrics()
        assert got["selligent_segment_events_delivered_total{tenant=acme}"] == 7
        assert got["selligent_segment_events_retried_total{tenant=acme}"] >= 3
        # an empty spool reads 0 (a series with a value), not "no data"
        backlog = {
            name: value
            for name, value in exporter.metrics().items()
            if name.startswith("selligent_segment_backlog_events{")
        }
        assert backlog
        assert set(backlog.values()) == {0}
    finally:
        codes = (_stop(service), _stop(exporter))
    assert codes == (0, 0)
