"""An Emitter on a postgresql:// spool (intake/_postgres.py) against a real server and a
LocalSegment: delivery, the transactional outbox, hosts sharing the table, and the
database going away (restart, terminated backends, stopped)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from selligent_segment import ConfigurationError, Emitter, SpoolError, encode
from selligent_segment.intake._postgres import PostgresIntake
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)
KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def spool_url(postgres: LocalPostgres) -> str:
    return f"{postgres.url}?spool_schema=emitter_test_{next(_schemas)}&lease_seconds=2"


@pytest.fixture
def emitter(spool_url: str, server: LocalSegment) -> Iterator[Emitter]:
    e = Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url)
    yield e
    e.close()


def _bounce(i: int, tenant: str = "acme") -> dict[str, object]:
    return {
        "type": "bounced",
        "tenant": tenant,
        "email": f"r{i}@example.com",
        "event_id": f"b-{i}",
        "bounce_type": "hard",
    }


def test_emitted_events_are_delivered_through_the_table(
    emitter: Emitter, server: LocalSegment
) -> None:
    for i in range(20):
        assert emitter.emit(_bounce(i))
    result = emitter.emit_many([_bounce(i, "globex") for i in range(20, 60)])
    assert result.accepted == 40
    assert emitter.flush(timeout=30)
    assert server.accepted_count == 60
    assert len(server.message_ids()) == 60
    assert {e["userId"] if "userId" in e else e["anonymousId"] for e in server.events()} == {
        f"r{i}@example.com" for i in range(60)
    }


def test_outbox_rollback_never_sends_and_commit_sends(
    emitter: Emitter, server: LocalSegment, postgres: LocalPostgres
) -> None:
    with psycopg.connect(postgres.url) as conn:
        emitter.emit(_bounce(1), connection=conn)
        emitter.emit_many([_bounce(2), _bounce(3)], connection=conn)
        conn.rollback()
        emitter.emit(_bounce(4), connection=conn)
        result = emitter.emit_many([_bounce(5), {"type": "bounced"}], connection=conn)
        assert result.accepted == 1
        assert [index for index, _ in result.refused] == [1]
        conn.commit()
    assert server.wait_for(2, timeout=30)
    assert emitter.flush(timeout=30)
    assert sorted(e["anonymousId"] for e in server.events()) == [
        "r4@example.com",
        "r5@example.com",
    ]


def test_the_outbox_sends_the_identify_of_a_profile_update_as_emit_does(
    spool_url: str, server: LocalSegment, postgres: LocalPostgres
) -> None:
    """With profile updates on, a hard bounce gets its identify whichever way it is
    emitted: on its own, or in the caller's transaction (emit and emit_many)."""
    with (
        Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url, profile_updates=True) as em,
        psycopg.connect(postgres.url) as conn,
    ):
        assert em.emit(_bounce(1))
        assert em.emit(_bounce(2), connection=conn)
        result = em.emit_many([_bounce(3), {"type": "bounced"}, _bounce(4)], connection=conn)
        assert (result.accepted, [i for i, _ in result.refused]) == (2, [1])
        conn.commit()
        assert server.wait_for(8, timeout=30)
        assert em.flush(timeout=30)
    kinds: dict[str, list[str]] = {}
    for event in server.events():
        kinds.setdefault(event["anonymousId"], []).append(event["type"])
    assert {who: sorted(types) for who, types in kinds.items()} == {
        f"r{i}@example.com": ["identify", "track"] for i in (1, 2, 3, 4)
    }


def test_an_outbox_insert_needs_a_postgresql_spool(server: LocalSegment) -> None:
    with (
        Emitter(write_keys=KEYS, endpoint=server.url) as memory,
        pytest.raises(ConfigurationError, match="connection: an outbox insert needs"),
    ):
        memory.emit(_bounce(1), connection=object())


def test_a_long_transaction_elsewhere_does_not_stop_delivery(
    emitter: Emitter, server: LocalSegment, postgres: LocalPostgres, spool_url: str
) -> None:
    schema = spool_url.split("spool_schema=")[1].split("&")[0]
    emitter.emit(_bounce(0))
    assert emitter.flush(timeout=30)
    with psycopg.connect(postgres.url) as other:
        other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        other.execute(f"SELECT count(*) FROM {schema}.messages").fetchone()  # holds a snapshot
        for i in range(1, 30):
            emitter.emit(_bounce(i))
        assert emitter.flush(timeout=30)
        assert server.accepted_count == 30
        other.rollback()


def test_another_hosts_rows_are_delivered_by_a_relay(spool_url: str, server: LocalSegment) -> None:
    # "host A" emits only; "host B" (a relay) has emitted nothing and delivers all of it
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=spool_url) as relay:
        writer = Emitter(
            write_keys=KEYS,
            endpoint="http://127.0.0.1:9/",  # host A cannot reach Segment at all
            spool=spool_url,
        )
        try:
            writer.emit_many([_bounce(i) for i in range(25)])
            assert server.wait_for(25, timeout=30)
        finally:
            writer.close(timeout=0.1)
        assert relay.flush(timeout=30)
    assert len(server.message_ids()) == 25


@pytest.mark.slow
def test_emit_raises_a_clear_error_while_the_database_is_down(
    spool_url: str, server: LocalSegment
) -> None:
    with LocalPostgres() as own:
        url = own.url + "?lease_seconds=2"
        e = Emitter(write_keys=KEYS, endpoint=server.url, spool=url)
        try:
            e.emit(_bounce(1))
            assert server.wait_for(1, timeout=30)
            own.stop_server()
            with pytest.raises(SpoolError, match=r"PostgreSQL spool postgresql://") as caught:
                e.emit(_bounce(2))
            assert "key-acme" not in str(caught.value)
            own.start_server()
            assert e.emit(_bounce(3))
            assert server.wait_for(2, timeout=30)
        finally:
            e.close(timeout=5)
    assert sorted(ev["anonymousId"] for ev in server.events()) == [
        "r1@example.com",
        "r3@example.com",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["restart-fast", "restart-immediate", "terminate-backends"])
def test_delivery_resumes_after_the_database_goes_away(
    emitter: Emitter, server: LocalSegment, postgres: LocalPostgres, cut: str
) -> None:
    emitter.emit_many([_bounce(i) for i in range(50)])
    server.outage(503)  # keep rows leased and released while the database goes away
    if cut.startswith("restart"):
        postgres.restart(cut.split("-")[1])
    else:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
    server.end_outage()
    emitter.emit_many([_bounce(i) for i in range(50, 80)])
    assert server.wait_for(80, timeout=60)
    assert emitter.flush(timeout=60)
    assert len(server.message_ids()) == 80


def test_failed_upkeep_does_not_stop_the_poll(
    spool_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round whose upkeep fails (a compaction or rotation the database refuses) still
    finds the tenants with rows: delivery never depends on the upkeep."""
    quiet = Emitter(write_keys=KEYS, endpoint="http://127.0.0.1:9/", spool=spool_url)
    try:
        intake = quiet._intake
        assert isinstance(intake, PostgresIntake)
        intake.spool.put_many([encode(_bounce(1))])

        def refused() -> None:
            raise SpoolError("upkeep refused by the test")

        monkeypatch.setattr(intake.spool, "maintain", refused)
        assert intake.maintain() == ["acme"]
    finally:
        quiet.close(timeout=0)


def test_a_worker_forked_while_the_database_is_unreachable_gets_a_working_emitter(
    spool_url: str, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The at-fork rebuild of an Emitter made before the fork (gunicorn ``--preload``)
    made a PostgreSQL spool whose constructor checked the schema and counted the tenants
    in the database: a worker forked while the database could not be reached (a failover)
    kept a closed emitter for its whole life (found by a review). A child does no round
    trip at the fork now (its parent checked the schema); its emits work once the
    database answers."""
    from selligent_segment.spool import _postgres

    parent = os.getpid()
    down = [True]  # in the child only, until it says otherwise
    real = _postgres.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() != parent and down[0]:
            raise _postgres.Unreachable("PostgreSQL spool: the database is away (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(_postgres, "connect", connect)
    emitter = Emitter(write_keys=KEYS, endpoint="http://127.0.0.1:9/", spool=spool_url)
    try:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1  # closed at the fork
            try:
                if not emitter._closed:
                    status = 2  # the emit failed
                    down[0] = False  # the database answers again
                    if emitter.emit(_bounce(1)):
                        status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        emitter.close(timeout=0.1)
    schema = spool_url.split("spool_schema=")[1].split("&")[0]
    with psycopg.connect(postgres.url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.messages").fetchone() == (1,)
