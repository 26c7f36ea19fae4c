"""Every example in examples/ run for real: processes, loopback HTTP, a SQLite file."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from selligent_segment import Emitter
from selligent_segment.testing import LocalSegment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SERVICE = [sys.executable, str(EXAMPLES / "webhook_service.py")]


def clean_env() -> dict[str, str]:
    """This process's environment without any variable Emitter.from_env reads."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "SEGMENT_WRITE_KEY" and not k.startswith("SELLIGENT_SEGMENT_")
    }


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- (a) the web service -------------------------------------------------------------------


class Service:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.host, self.port = host, int(port)

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), json.loads(data)
        finally:
            conn.close()

    def post(self, path: str, record: object) -> tuple[int, Any]:
        status, _, body = self.request("POST", path, json.dumps(record).encode())
        return status, body


@pytest.fixture
def segment() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        yield server


@pytest.fixture
def service(segment: LocalSegment, tmp_path: Path) -> Iterator[Service]:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"acme": "key-acme", "globex": "key-globex"}))
    env = {
        **clean_env(),
        "SELLIGENT_SEGMENT_WRITE_KEYS": str(keys),
        "SELLIGENT_SEGMENT_ENDPOINT": segment.url,
    }
    proc = subprocess.Popen(
        [*SERVICE, "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the service did not start"
        first = proc.stdout.readline()
        assert first.startswith("LISTENING http://127.0.0.1:"), first
        yield Service(proc, first.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_web_service_accepts_callbacks_and_they_reach_segment(
    service: Service, segment: LocalSegment
) -> None:
    bounce = {
        "type": "bounced",
        "tenant": "acme",
        "email": "Ada@Example.com",
        "event_id": "mta-8812",
        "timestamp": "2026-11-20T10:01:00Z",
        "bounce_type": "hard",
        "smtp_status": "5.1.1",
    }
    assert service.post("/callbacks", bounce) == (202, {"accepted": True})
    unsubscribe = {"tenant": "globex", "email": "linus@example.net", "list_id": "weekly"}
    assert service.post("/callbacks/unsubscribed", unsubscribe) == (202, {"accepted": True})
    click = {"tenant": "acme", "user_id": 42, "link_url": "https://example.com/offer"}
    assert service.post("/callbacks/link_clicked/", click) == (202, {"accepted": True})

    assert segment.wait_for(3, timeout=30)
    acme = segment.events("key-acme")
    assert sorted(e["event"] for e in acme) == ["Email Bounced", "Email Link Clicked"]
    bounced = next(e for e in acme if e["event"] == "Email Bounced")
    assert bounced["properties"] == {"bounce_type": "hard", "smtp_status": "5.1.1"}
    assert bounced["anonymousId"] == "ada@example.com"
    (globex,) = segment.events("key-globex")
    assert globex["event"] == "Email Unsubscribed"
    assert globex["properties"] == {"list_id": "weekly"}

    # The service counts an event queued until Segment's 200 is processed, which is a
    # moment after LocalSegment has recorded it: poll the health check for that.
    deadline = time.monotonic() + 30
    while True:
        status, _, health = service.request("GET", "/healthz")
        assert status == 200
        if health["queued"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert health == {"ok": True, "queued": 0, "paused": []}

    # SIGTERM: the service stops accepting, flushes and exits 0.
    service.proc.send_signal(signal.SIGTERM)
    _, err = service.proc.communicate(timeout=30)
    assert service.proc.returncode == 0
    assert "3 events accepted, 3 delivered, 0 not delivered" in err
    assert "example.com" not in err  # no addresses logged
    assert "example.net" not in err
    assert "key-acme" not in err


def test_web_service_answers_400_naming_the_field(service: Service, segment: LocalSegment) -> None:
    def error(path: str, record: object) -> tuple[int, Any]:
        return service.post(path, record)

    assert error("/callbacks", {"type": "opened", "tenant": "acme", "email": "nope"}) == (
        400,
        {"error": {"field": "email", "reason": "not a plausible email address"}},
    )
    assert error("/callbacks/bounced", {"tenant": "acme", "user_id": "u", "bounce_type": "x"}) == (
        400,
        {"error": {"field": "bounce_type", "reason": "expected 'hard' or 'soft', got 'x'"}},
    )
    assert error("/callbacks/opened", {"type": "bounced", "tenant": "acme", "user_id": "u"}) == (
        400,
        {"error": {"field": "type", "reason": "given by the URL; leave it out of the body"}},
    )
    assert error("/callbacks", {"type": "opened", "tenant": "initech", "user_id": "u"}) == (
        503,  # no key yet: the platform should retry (test_..._503_for_a_tenant_without_a_key)
        {"error": {"field": "tenant", "reason": "no write key configured for 'initech'"}},
    )
    assert error("/callbacks", {"type": "opened", "user_id": "u"}) == (
        400,
        {
            "error": {
                "field": "tenant",
                "reason": "required: write_keys names no 'default' tenant",
            }
        },
    )
    assert error("/callbacks", [1, 2]) == (
        400,
        {"error": {"field": "record", "reason": "expected a JSON object, got list"}},
    )
    status, _, body = service.request("POST", "/callbacks", b"{not json")
    assert status == 400
    assert body["error"]["field"] == "body"
    assert body["error"]["reason"].startswith("invalid JSON (")
    status, _, body = service.request("POST", "/callbacks", b"x" * (65 * 1024))
    assert status == 413
    assert service.post("/callbacks/sent", {"tenant": "acme", "user_id": "u"})[0] == 404
    assert service.request("GET", "/callbacks")[0] == 404
    # One valid callback after all the refusals: it is the only event that arrives.
    valid = {"type": "opened", "tenant": "acme", "user_id": "u"}
    assert service.post("/callbacks", valid) == (202, {"accepted": True})
    assert segment.wait_for(1, timeout=30)
    service.proc.send_signal(signal.SIGTERM)
    service.proc.communicate(timeout=30)
    assert service.proc.returncode == 0
    assert segment.accepted_count == 1


@contextlib.contextmanager
def serving(emitter: Emitter) -> Iterator[tuple[str, int]]:
    """The web service in this process, emitting to ``emitter``; its address."""
    server = load("webhook_service").create_server(("127.0.0.1", 0), emitter)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_web_service_answers_503_for_a_tenant_without_a_key_yet(segment: LocalSegment) -> None:
    """Found by a review: a tenant with no write key yet (``UnknownTenant``) was answered
    ``400``, which tells the platform never to retry: its events were lost even once its
    key was added. It is a ``503`` with ``Retry-After`` now, as
    ``examples/integrations/mail_hooks.py`` answers."""
    record = {"tenant": "initech", "email": "ada@example.com", "event_id": "b1"}
    emitter = Emitter(write_keys={"acme": "key-acme"}, endpoint=segment.url)
    with emitter, serving(emitter) as (host, port):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", "/callbacks/opened", body=json.dumps(record).encode())
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
    assert (response.status, response.getheader("Retry-After")) == (503, "60")
    assert body == {"error": {"field": "tenant", "reason": "no write key configured for 'initech'"}}


def test_web_service_closes_the_connection_after_a_411(segment: LocalSegment) -> None:
    """Found by a review: a chunked request was answered ``411`` with its body left unread
    on a kept-alive connection, so the body was read as the next request (a ``400``) and
    the request the client sent after it was lost. The ``411`` closes the connection now
    (``Connection: close``), as the ``413`` does."""
    body = json.dumps({"tenant": "acme", "email": "ada@example.com", "event_id": "o1"}).encode()
    chunked = (
        b"POST /callbacks/opened HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    plain = b"POST /callbacks/opened HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    emitter = Emitter(write_keys={"acme": "key-acme"}, endpoint=segment.url)
    with emitter, serving(emitter) as address, socket.create_connection(address, 30) as client:
        client.sendall(chunked + plain)
        received = b""
        while chunk := client.recv(65536):  # until the service closes the connection
            received += chunk
    head, rest = received.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 411 Length Required"
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"Content-Length"))
    assert len(rest) == length  # nothing after the 411: the body was never read as a request
    assert json.loads(rest) == {"error": {"field": "body", "reason": "Content-Length required"}}
    assert b"Connection: close" in lines
    assert emitter.stats().accepted == 0


@pytest.mark.slow  # a child process: half a second or more
def test_web_service_with_a_bad_variable_stops_in_one_line_naming_it() -> None:
    result = subprocess.run(
        [*SERVICE, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_env(), "SELLIGENT_SEGMENT_THREADS": "many"},
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "webhook_service: SELLIGENT_SEGMENT_THREADS: must be an integer, got 'many'\n"
    )


# -- (b) multi-tenant keys in a database table ----------------------------------------------


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_multi_tenant_demo_runs_and_rotates_keys() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "multi_tenant_sqlite.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1. sent with the first keys: acme: 3/3 delivered, globex: 3/3 delivered"
    assert lines[2].startswith("3. acme paused, its event kept: acme: 3/4 delivered (paused)")
    assert lines[-1] == "every event delivered with the right key"
    assert "-key-" not in result.stdout + result.stderr  # keys are never printed


def test_key_table_caches_and_sees_its_own_changes_at_once(tmp_path: Path) -> None:
    example = load("multi_tenant_sqlite")
    database = tmp_path / "tenants.db"
    table = example.KeyTable(database, ttl=3600)
    other_process = example.KeyTable(database, ttl=0)
    assert table("acme") is None
    other_process.set_key("acme", "key-1")
    assert table("acme") is None  # cached for ttl seconds
    assert other_process("acme") == "key-1"  # no cache: sees the table
    table.set_key("acme", "key-2")
    assert table("acme") == "key-2"  # its own change: at once
    assert table.tenants() == ["acme"]


def test_key_table_as_the_emitters_resolver(tmp_path: Path) -> None:
    example = load("multi_tenant_sqlite")
    table = example.KeyTable(tmp_path / "tenants.db")
    table.set_key("acme", "key-acme")
    paused = threading.Event()
    with LocalSegment(write_keys=["key-acme", "key-acme-2"]) as server:
        emitter = Emitter(
            write_keys=table, endpoint=server.url, on_pause=lambda tenant, why: paused.set()
        )
        try:
            emitter.opened(tenant="acme", email="a@example.com", event_id="1")
            emitter.opened(tenant="initech", email="a@example.com", event_id="2")  # no key row
            assert paused.wait(timeout=30)
            assert emitter.stats().tenants["initech"].paused == "no write key configured"
            assert server.wait_for(1, timeout=30)
            example.rotate_key(table, emitter, "acme", "key-acme-2")
            emitter.opened(tenant="acme", email="b@example.com", event_id="3")
            assert server.wait_for(2, timeout=30)
        finally:
            emitter.close(timeout=0)
        assert [e["anonymousId"] for e in server.events("key-acme")] == ["a@example.com"]
        assert [e["anonymousId"] for e in server.events("key-acme-2")] == ["b@example.com"]


# -- (c) the pytest example -----------------------------------------------------------------


@pytest.mark.slow
def test_the_pytest_example_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/pytest_example"],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


@pytest.mark.slow
def test_the_top_level_test_run_does_not_collect_the_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        cwd=ROOT,
    )
    assert "tests/test_examples.py" in result.stdout
    assert "examples/" not in result.stdout


def test_key_table_keeps_the_last_known_key_when_the_database_fails(tmp_path: Path) -> None:
    example = load("multi_tenant_sqlite")
    database = tmp_path / "tenants.db"
    table = example.KeyTable(database, ttl=0)
    table.set_key("acme", "key-1")
    assert table("acme") == "key-1"
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE tenant_keys")
    assert table("acme") == "key-1"  # the lookup failed: last known key
    assert table("globex") is None  # never known: None (the tenant pauses until it has one)
