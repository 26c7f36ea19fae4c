"""The wake-up of a PostgreSQL spool (spool/_postgres.py ``Listener``): every committed
batch sends one ``NOTIFY`` naming its tenants; delivering processes ``LISTEN`` and wake
their senders at once; polling stays the fallback. Real server, real LocalSegment. The
tests wait on conditions (rows arrived, the listener connected or cut), never on timing:
with polling switched off, only a notification can have woken the relay."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import selligent_segment.intake._encoder as encoder_module
import selligent_segment.spool._postgres as pg_module
from selligent_segment import Emitter, SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.intake._postgres import PostgresIntake
from selligent_segment.spool._postgres import Listener, PostgresSpool
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)
KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def spool_url(postgres: LocalPostgres) -> str:
    return f"{postgres.url}?spool_schema=notify_test_{next(_schemas)}"


def _track(tenant: str, i: int) -> EncodedMessage:
    body = json.dumps(
        {
            "type": "track",
            "event": "Email Opened",
            "messageId": f"{tenant}-{i}",
            "anonymousId": f"r{i}@example.com",
            "timestamp": "2026-11-30T10:00:00Z",
            "properties": {},
        }
    ).encode()
    return EncodedMessage(tenant, f"{tenant}-{i}", EventKind.OPENED, body)


def _listener(emitter: Emitter) -> Listener:
    intake = emitter._intake
    assert isinstance(intake, PostgresIntake)
    _until(lambda: intake.listener is not None)
    assert intake.listener is not None
    assert intake.listener.connected.wait(30)
    return intake.listener


def _until(condition: Any) -> None:
    deadline = time.monotonic() + 30  # a bound for a broken build, not what is tested
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def writer(spool_url: str) -> Iterator[PostgresSpool]:
    """Another host: writes rows, delivers nothing."""
    spool = PostgresSpool(spool_url)
    yield spool
    spool.close()


def test_a_relay_is_woken_by_another_hosts_commit_without_polling(
    spool_url: str, writer: PostgresSpool, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "MAINTAIN_EVERY", 3600.0)  # one poll, at start
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as relay:
        _listener(relay)
        writer.put_many([_track("acme", 1)])  # a group commit: INSERT with its NOTIFY
        assert server.wait_for(1, timeout=30)
        writer.put_many([_track("globex", i) for i in range(2, 202)])  # a COPY, its NOTIFY
        assert server.wait_for(201, timeout=30)
        with psycopg.connect(spool_url.split("?")[0]) as conn:  # the outbox: at commit
            writer.put_many([_track("acme", 300)], connection=conn)
            conn.commit()
        assert server.wait_for(202, timeout=30)
        assert len(server.message_ids()) == 202


def test_notify_off_sends_nothing_and_listens_to_nothing(
    spool_url: str, postgres: LocalPostgres
) -> None:
    url = spool_url + "&notify=off"
    spool = PostgresSpool(url)
    try:
        assert not spool.notify
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f"LISTEN {spool.schema}")
            spool.put_many([_track("acme", 1)])
            assert list(conn.notifies(timeout=0.2)) == []
    finally:
        spool.close()
    with Emitter(write_keys=KEYS, endpoint="http://127.0.0.1:9/", spool=url) as quiet:
        intake = quiet._intake
        assert isinstance(intake, PostgresIntake)
        quiet._encoder.maintain()
        assert intake.listener is None


def test_one_notify_per_batch_naming_its_tenants(
    spool_url: str, writer: PostgresSpool, postgres: LocalPostgres
) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"LISTEN {writer.schema}")
        writer.put_many([_track("acme", i) for i in range(3)] + [_track("globex", 9)])
        writer.put_many([_track("acme", i) for i in range(10, 110)])
        got = list(conn.notifies(timeout=1.0, stop_after=2))
    assert [json.loads(n.payload) for n in got] == [
        [writer.token, {"acme": 3, "globex": 1}],
        [writer.token, {"acme": 100}],
    ]


def test_polling_finds_the_rows_while_the_listening_connection_is_cut(
    spool_url: str,
    writer: PostgresSpool,
    server: LocalSegment,
    postgres: LocalPostgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as relay:
        listener = _listener(relay)
        real_connect = pg_module.connect

        def no_listening(url: str, **kw: Any) -> Any:
            if kw.get("role") == "listen":
                raise SpoolError("listening refused by the test")
            return real_connect(url, **kw)

        monkeypatch.setattr(pg_module, "connect", no_listening)
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
        _until(lambda: not listener.connected.is_set())
        writer.put_many([_track("acme", i) for i in range(5)])
        assert server.wait_for(5, timeout=30)  # by polling: nobody listens
        assert not listener.connected.is_set()
        monkeypatch.setattr(pg_module, "connect", real_connect)
        assert listener.connected.wait(60)  # it comes back by itself
