"""The wake-up of a PostgreSQL spool (``Listener`` in spool/_postgres.py, ``_notify`` in
intake/_postgres.py): an emitting process sends one ``NOTIFY`` per round of what its
emits committed (at most every NOTIFY_EVERY, never one per event), an outbox insert its
own in the caller's transaction; delivering processes ``LISTEN`` and wake their senders
at once; polling stays the fallback. Real server, real LocalSegment. The tests wait on
conditions (rows arrived, the listener connected or cut), never on timing: with polling
switched off, only a notification can have woken the relay."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
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


def _open(tenant: str, i: int) -> dict[str, object]:
    return {
        "type": "opened",
        "tenant": tenant,
        "email": f"r{i}@example.com",
        "event_id": f"{tenant}-{i}",
        "email_id": "m-1",
    }


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


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30  # a bound for a broken build, not what is tested
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _listener(emitter: Emitter) -> Listener:
    intake = emitter._intake
    assert isinstance(intake, PostgresIntake)
    _until(lambda: intake.listener is not None)
    assert intake.listener is not None
    assert intake.listener.connected.wait(30)
    return intake.listener


@pytest.fixture
def writer(spool_url: str) -> Iterator[Emitter]:
    """Another host: emits rows (its encoder sends the NOTIFYs), delivers nothing."""
    emitter = Emitter(write_keys=KEYS, endpoint="http://127.0.0.1:9/", spool=spool_url)
    emitter._dispatcher.stop(5.0)
    yield emitter
    emitter.close(timeout=0.1)


def test_a_relay_is_woken_by_another_hosts_commit_without_polling(
    spool_url: str, writer: Emitter, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "MAINTAIN_EVERY", 3600.0)  # one poll, at start
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as relay:
        _listener(relay)
        assert writer.emit(_open("acme", 1))
        assert server.wait_for(1, timeout=30)
        assert writer.emit_many([_open("globex", i) for i in range(2, 202)]).accepted == 200
        assert server.wait_for(201, timeout=30)
        with psycopg.connect(spool_url.split("?")[0]) as conn:  # the outbox: at commit
            assert writer.emit(_open("acme", 300), connection=conn)
            conn.commit()
        assert server.wait_for(202, timeout=30)
        assert len(server.message_ids()) == 202


def test_an_outbox_commit_wakes_the_senders_of_the_process_that_inserted_it(
    spool_url: str, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener skipped every notification of its own process (its emits counted
    their rows), an outbox insert's too, whose rows nobody counted: they waited for the
    next poll (median 628 ms from the commit to Segment, against 107 ms for an emit; found
    by a review). With polling off here, only that notification can deliver them."""
    monkeypatch.setattr(encoder_module, "MAINTAIN_EVERY", 3600.0)  # one poll, at start
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as emitter:
        _listener(emitter)
        with psycopg.connect(spool_url.split("?")[0]) as conn:
            assert emitter.emit(_open("acme", 1), connection=conn)
            assert emitter.emit(_open("globex", 2), connection=conn)
            conn.commit()
        assert server.wait_for(2, timeout=10)
        assert len(server.message_ids()) == 2


def test_notifies_name_the_tenants_and_rows_never_one_per_event(
    writer: Emitter, postgres: LocalPostgres
) -> None:
    spool = writer._intake.spool
    assert isinstance(spool, PostgresSpool)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"LISTEN {spool.schema}")
        assert writer.emit_many([_open("acme", i) for i in range(100)]).accepted == 100
        for i in range(100, 120):
            assert writer.emit(_open("globex", i))
        counts: dict[str, int] = {}
        payloads = []
        while counts != {"acme": 100, "globex": 20}:
            got = list(conn.notifies(timeout=30, stop_after=1))
            assert got, f"missing notifications: {counts}"
            for n in got:
                token, named = json.loads(n.payload)
                assert token == spool.token
                payloads.append(named)
                for tenant, rows in named.items():
                    counts[tenant] = counts.get(tenant, 0) + rows
        assert len(payloads) < 21  # never one per event
        with psycopg.connect(postgres.url) as outbox:  # the outbox: its own, at its commit
            spool.put_many([_track("acme", 500)], connection=outbox)
            outbox.rollback()
            spool.put_many([_track("acme", 501), _track("acme", 502)], connection=outbox)
            outbox.commit()
        got = list(conn.notifies(timeout=30, stop_after=1))
        assert [json.loads(n.payload) for n in got] == [[spool.outbox_token, {"acme": 2}]]


def test_notify_off_sends_nothing_and_listens_to_nothing(
    spool_url: str, postgres: LocalPostgres
) -> None:
    url = spool_url + "&notify=off"
    spool = PostgresSpool(url)
    try:
        assert not spool.notify
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f"LISTEN {spool.schema}")
            spool.notify_tenants({"acme": 1})
            with psycopg.connect(postgres.url) as outbox:
                spool.put_many([_track("acme", 1)], connection=outbox)
            assert list(conn.notifies(timeout=0.2)) == []
    finally:
        spool.close()
    # The committed row cannot be delivered (port 9): close at once, it stays in the table.
    quiet = Emitter(write_keys=KEYS, endpoint="http://127.0.0.1:9/", spool=url)
    try:
        intake = quiet._intake
        assert isinstance(intake, PostgresIntake)
        quiet._encoder.maintain()
        assert intake.listener is None
    finally:
        quiet.close(timeout=0)


def test_polling_finds_the_rows_while_the_listening_connection_is_cut(
    spool_url: str,
    writer: Emitter,
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
        assert writer.emit_many([_open("acme", i) for i in range(5)]).accepted == 5
        assert server.wait_for(5, timeout=30)  # by polling: nobody listens
        assert not listener.connected.is_set()
        monkeypatch.setattr(pg_module, "connect", real_connect)
        assert listener.connected.wait(60)  # it comes back by itself


def test_a_service_using_enqueue_wakes_the_relays_with_one_notify(
    spool_url: str, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "MAINTAIN_EVERY", 3600.0)  # one poll, at start
    schema = spool_url.split("spool_schema=")[1]
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as relay:
        _listener(relay)
        message = json.loads(_track("acme", 7).body)
        with psycopg.connect(spool_url.split("?")[0]) as conn:
            conn.execute(f"SELECT {schema}.enqueue('acme', %s::jsonb)", (json.dumps(message),))
            conn.execute(f"NOTIFY {schema}")
            conn.commit()
        assert server.wait_for(1, timeout=30)
        assert server.message_ids() == {"acme-7"}
