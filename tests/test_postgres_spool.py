"""The PostgreSQL spool (spool/_postgres.py) against a real server (testing/_local_postgres.py).

The server is started once for the module; each test gets its own schema, so tests do not
see each other's rows. A machine without the server binaries fails these tests (never skips).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from selligent_segment._errors import ConfigurationError, SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool._postgres import (
    COUNT_CAP,
    SCHEMA_VERSION,
    PostgresSpool,
    ensure_schema,
    is_postgres_url,
    redact,
)
from selligent_segment.spool._protocol import Lease
from selligent_segment.testing import _local_postgres
from selligent_segment.testing._local_postgres import LocalPostgres, PostgresUnavailable

_schemas = itertools.count(1)


@pytest.fixture
def pg(postgres: LocalPostgres) -> LocalPostgres:
    return postgres


@pytest.fixture
def schema() -> str:
    return f"spool_test_{next(_schemas)}"


@pytest.fixture
def spool(pg: LocalPostgres, schema: str) -> Iterator[PostgresSpool]:
    """A spool in the test's own schema, closed after the test."""
    opened = PostgresSpool(pg.url, schema=schema)
    yield opened
    opened.close()


def _messages(tenant: str, n: int, size: int = 10) -> list[EncodedMessage]:
    return [
        EncodedMessage(tenant, f"{tenant}-{i}", EventKind.BOUNCED, b"x" * size) for i in range(n)
    ]


def test_urls_are_recognised_and_passwords_never_shown() -> None:
    assert is_postgres_url("postgresql://u@h/db")
    assert is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("/var/spool/x.db")
    assert redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"


def test_put_lease_ack_keeps_each_tenants_order_and_the_byte_limit(spool: PostgresSpool) -> None:
    spool.put_many(_messages("acme", 5) + _messages("globex", 2))
    assert spool.tenants() == ["acme", "globex"]
    assert spool.backlog("acme") == 5
    lease = spool.lease("acme", max_messages=10, max_bytes=33)  # 3 bodies of 10 + 1
    assert lease is not None
    assert [m.message_id for m in lease.messages] == ["acme-0", "acme-1", "acme-2"]
    assert spool.backlog("acme") == 2  # the leased rows are not leasable
    spool.ack(lease, lease.messages)
    assert spool.stats().per_tenant == {"acme": 2, "globex": 2}
    rest = spool.lease("acme", 10, 1 << 20)
    assert rest is not None
    assert [m.message_id for m in rest.messages] == ["acme-3", "acme-4"]
    assert rest.messages[0].kind is EventKind.BOUNCED
    assert rest.messages[0].body == b"x" * 10


def test_release_gives_rows_back_at_their_place_and_reject_makes_dead_letters(
    spool: PostgresSpool,
) -> None:
    spool.put_many(_messages("acme", 3))
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages[:1], "invalid: no userId", 400)
    spool.release(lease, lease.messages[1:])
    again = spool.lease("acme", 3, 1 << 20)
    assert again is not None
    assert [m.message_id for m in again.messages] == ["acme-1", "acme-2"]
    assert spool.dead_letters("acme") == [("acme", "acme-0", "invalid: no userId", 400)]
    with pytest.raises(ValueError, match="is not live"):
        spool.ack(lease, lease.messages[1:])


def test_two_hosts_never_hold_the_same_rows_and_an_expired_lease_is_taken_over(
    pg: LocalPostgres, schema: str
) -> None:
    one = PostgresSpool(pg.url, schema=schema, owner="host-1")
    two = PostgresSpool(pg.url, schema=schema, owner="host-2")
    try:
        one.put_many(_messages("acme", 4))
        first = one.lease("acme", 2, 1 << 20)
        second = two.lease("acme", 10, 1 << 20)
        assert first is not None
        assert second is not None
        ids_one = {m.message_id for m in first.messages}
        ids_two = {m.message_id for m in second.messages}
        assert ids_one == {"acme-0", "acme-1"}
        assert ids_two == {"acme-2", "acme-3"}
        assert two.lease("acme", 10, 1 << 20) is None
        # host-1 dies holding its lease; once the lease has expired, host-2 takes it over
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {schema}.messages SET lease_until = now() - interval '1 second' "
                "WHERE owner LIKE 'host-1#%'"  # a lease's owner: host-1#TAG.N
            )
        taken = two.lease("acme", 10, 1 << 20)
        assert taken is not None
        assert {m.message_id for m in taken.messages} == ids_one
        # the dead host's late ack deletes nothing: the rows are host-2's now
        one.ack(first, first.messages)
        assert one.stats().messages == 4
        two.ack(taken, taken.messages)
        two.ack(second, second.messages)
        assert two.empty()
    finally:
        one.close()
        two.close()


def test_close_gives_live_leases_back(pg: LocalPostgres, schema: str) -> None:
    spool = PostgresSpool(pg.url, schema=schema)
    spool.put_many(_messages("acme", 2))
    assert spool.lease("acme", 2, 1 << 20) is not None
    spool.close()
    other = PostgresSpool(pg.url, schema=schema)
    try:
        assert other.backlog("acme") == 2
    finally:
        other.close()


def test_a_newer_schema_is_refused_with_a_clear_error(pg: LocalPostgres, schema: str) -> None:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        ensure_schema(conn, schema)
        conn.execute(f"UPDATE {schema}.meta SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SpoolError, match=r"version 3 was written by a newer selligent-segment"):
        PostgresSpool(pg.url, schema=schema)


def test_bad_settings_are_refused_when_constructed(pg: LocalPostgres) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresSpool(pg.url, schema="Robert'); DROP TABLE x;--")
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        PostgresSpool(pg.url, lease_seconds=0)


def test_an_unreachable_database_is_a_spool_error_without_the_password() -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/nothing"
    with pytest.raises(SpoolError) as caught:
        PostgresSpool(url, connect_timeout=1)
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_a_restart_costs_nothing_the_dead_pooled_connections_are_replaced(
    pg: LocalPostgres, spool: PostgresSpool
) -> None:
    spool.put_many(_messages("acme", 3))
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    pg.restart("immediate")  # a crash: every pooled connection is cut
    spool.ack(lease, lease.messages)  # retried once on a new connection
    assert not spool._unwritten
    assert spool.empty()


def _leased_then_down(own: LocalPostgres, spool: PostgresSpool, tenant: str, n: int) -> Lease:
    """``n`` messages of ``tenant`` written and leased whole, then the server stopped."""
    spool.put_many(_messages(tenant, n))
    lease = spool.lease(tenant, n, 1 << 20)
    assert lease is not None
    own.stop_server()
    return lease


@pytest.mark.slow
def test_settlements_while_the_database_is_down_are_kept_and_written_afterwards() -> None:
    with LocalPostgres() as own:
        spool = PostgresSpool(own.url, connect_timeout=1)
        try:
            lease = _leased_then_down(own, spool, "acme", 3)
            spool.ack(lease, lease.messages[:2])  # never raises: kept in memory
            spool.release(lease, lease.messages[2:])
            assert len(spool._unwritten) == 2
            with pytest.raises(SpoolError):
                spool.maintain()
            own.start_server()
            spool.maintain()  # the database answers again: written, in order
            assert not spool._unwritten
            again = spool.lease("acme", 3, 1 << 20)
            assert again is not None
            assert [m.message_id for m in again.messages] == ["acme-2"]
        finally:
            spool.close()


def _partitions(pg: LocalPostgres, schema: str) -> list[str]:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'messages' ORDER BY c.relname",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def test_rotation_drops_drained_partitions_and_keeps_rows_still_queued(
    pg: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    spool.put_many(_messages("acme", 3))
    assert spool.rotate(force=True) == 0  # messages_1 still holds 3 rows
    spool.put_many(_messages("globex", 2))  # into messages_2
    assert _partitions(pg, schema) == ["messages_1", "messages_2"]
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert [m.message_id for m in lease.messages] == ["acme-0", "acme-1", "acme-2"]
    spool.ack(lease, lease.messages)
    assert spool.rotate(force=True) == 1  # messages_1 drained: dropped whole
    assert _partitions(pg, schema) == ["messages_2", "messages_3"]
    assert spool.stats().per_tenant == {"globex": 2}
    assert spool.rotate() == 0  # not due: rotate_seconds has not passed


def test_a_partition_in_use_is_never_dropped_and_an_open_outbox_row_survives_rotation(
    pg: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    with psycopg.connect(pg.url) as outbox:
        spool.put_many(_messages("acme", 1), connection=outbox)  # open transaction
        assert spool.rotate(force=True) == 0  # messages_1 is held by the open outbox
        assert spool.rotate(force=True) == 0  # messages_2 is empty, but a drop locks
        # the whole queue, which the open transaction holds: it waits for a later round
        outbox.commit()
    assert spool.tenants() == ["acme"]
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert [m.message_id for m in lease.messages] == ["acme-0"]
    assert spool.rotate(force=True) == 2  # the empty messages_2 and _3 go
    assert _partitions(pg, schema) == ["messages_1", "messages_4"]  # _1 holds the lease
    spool.ack(lease, lease.messages)
    assert spool.rotate(force=True) == 2  # now messages_1 (and _4) are drained
    assert _partitions(pg, schema) == ["messages_5"]
    assert spool.stats().messages == 0


def test_a_long_reader_elsewhere_delays_only_the_drop_of_what_it_holds(
    pg: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    spool.put_many(_messages("acme", 2))
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    spool.ack(lease, lease.messages)
    with psycopg.connect(pg.url) as reader:
        reader.execute(f"SELECT count(*) FROM {schema}.messages").fetchone()  # holds locks
        assert spool.rotate(force=True) == 0  # messages_1 is empty but held: kept
        spool.put_many(_messages("globex", 2))  # the queue goes on in messages_2
        again = spool.lease("globex", 10, 1 << 20)
        assert again is not None
        spool.ack(again, again.messages)
        reader.rollback()
    assert spool.rotate(force=True) == 2  # both drained partitions go
    assert _partitions(pg, schema) == ["messages_3"]


def test_an_idle_transaction_on_the_queue_never_makes_inserts_wait_on_a_rotation(
    pg: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    """An idle transaction that touched ``messages`` (an operator's psql ``BEGIN; SELECT``,
    an open outbox transaction) holds a lock on it; the DROP of each drained partition
    needs ACCESS EXCLUSIVE on ``messages`` too and waited in the lock queue for its 50 ms
    ``lock_timeout``, every INSERT of every host queued behind it, once per drained
    partition and upkeep round (4 spools, 15 partitions: 87 % of 3.3 s blocked in emit;
    found by a review). Now the round stops without queueing for the lock."""
    with psycopg.connect(pg.url) as idle:
        idle.execute(f"SELECT count(*) FROM {schema}.messages").fetchone()  # and left open
        for i in range(6):  # six partitions retired and drained while it stays open
            spool.put_many(_messages(f"t{i}", 1))
            lease = spool.lease(f"t{i}", 10, 1 << 20)
            assert lease is not None
            spool.ack(lease, lease.messages)
            spool.rotate(force=True)
        assert len(_partitions(pg, schema)) == 7
        started, done = threading.Event(), threading.Event()
        refused: list[str] = []

        def insert() -> None:  # another host's emits, each refused after 10 ms of waiting
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '10ms'")
                while not done.is_set():
                    try:
                        conn.execute(
                            f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
                            "VALUES ('w', 'w', 'opened', '\\x00')"
                        )
                    except psycopg.errors.LockNotAvailable as exc:
                        refused.append(str(exc))
                    started.set()

        writer = threading.Thread(target=insert)
        writer.start()
        try:
            assert started.wait(10)
            for _ in range(3):  # three upkeep rounds
                assert spool.rotate() == 0
        finally:
            done.set()
            writer.join()
        assert refused == []
        idle.rollback()
    lease = spool.lease("w", 10_000, 1 << 30)
    assert lease is not None
    spool.ack(lease, lease.messages)
    assert spool.rotate() == 6  # the holder gone, one round drops them all
    assert len(_partitions(pg, schema)) == 1


class _StaleOnce:
    """A spool connection whose first write into the queue fails as a statement does that
    locked the queue before a rotation attached a partition, then read the new generation
    (PostgreSQL: ``no partition of relation "messages" found for row``)."""

    def __init__(self, conn: psycopg.Connection[Any], failed: list[str]) -> None:
        self._conn = conn
        self._failed = failed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _fail_once(self, sql: str) -> None:
        if not self._failed and sql.lstrip().startswith(("INSERT INTO", "COPY")):
            self._failed.append(sql)
            raise psycopg.errors.CheckViolation('no partition of relation "messages" found')

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._fail_once(sql)
        return self._conn.execute(sql, *args, **kwargs)

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        with self._conn.cursor() as cursor:
            yield _StaleCursor(cursor, self._fail_once)


class _StaleCursor:
    def __init__(self, cursor: Any, fail_once: Any) -> None:
        self._cursor = cursor
        self._fail_once = fail_once

    def copy(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._fail_once(sql)
        return self._cursor.copy(sql, *args, **kwargs)


@pytest.mark.parametrize("n", [1, 3, 65])
def test_a_write_that_meets_a_partition_attached_meanwhile_is_made_again(
    spool: PostgresSpool, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """A rotation attaches the next partition with SHARE UPDATE EXCLUSIVE, which writers do
    not wait on: a statement that had locked the queue before the attach committed, and read
    the new generation after, failed whole with a check violation and ``emit`` raised
    (18 of 200 back-to-back rotations under four writers; found while checking the
    rotation's fixes). It is made once more: the next statement knows the partition."""
    real = spool._connection
    failed: list[str] = []

    @contextlib.contextmanager
    def connection() -> Iterator[Any]:
        with real() as conn:
            yield _StaleOnce(conn, failed)

    monkeypatch.setattr(spool, "_connection", connection)
    spool._generation = None  # a large write: the COPY with the column's default
    spool.put_many(_messages("acme", n))
    assert failed
    assert spool.stats().per_tenant == {"acme": n}


def test_tenants_lists_leasable_tenants_and_counts_each_up_to_the_cap(spool: PostgresSpool) -> None:
    spool.put_many(_messages("acme", COUNT_CAP + 7) + _messages("globex", 3))
    spool.put_many(_messages("initech", 2))
    assert spool.tenants() == ["acme", "globex", "initech"]
    assert spool.backlog("acme") == COUNT_CAP  # at least that many: counted no further
    assert spool.backlog("globex") == 3
    held = spool.lease("initech", 10, 1 << 20)  # every row of initech is leased
    assert held is not None
    assert spool.tenants() == ["acme", "globex"]
    lease = spool.lease("acme", 1000, 1 << 20)
    assert lease is not None
    assert spool.backlog("acme") == COUNT_CAP  # still "at least the cap" until counted
    spool.ack(lease, lease.messages)
    assert spool.tenants() == ["acme", "globex"]
    assert spool.backlog("acme") == COUNT_CAP + 7 - 1000  # under the cap: exact
    while (rest := spool.lease("acme", 2500, 1 << 30)) is not None:
        spool.ack(rest, rest.messages)
    assert spool.backlog("acme") == 0
    assert spool.tenants() == ["globex"]


def test_has_room_refuses_only_on_the_exact_sum_and_partitions_store_bodies_uncompressed(
    pg: LocalPostgres, schema: str
) -> None:
    spool = PostgresSpool(pg.url, schema=schema, max_bytes=1 << 30)
    try:
        spool.put_many(_messages("acme", 40, size=100))  # 4,000 bytes of bodies
        assert spool.has_room(1 << 20, fresh=True)  # far from the cap: the size on disk says
        # so (a page or more per partition, never less than the bodies)
        assert spool._size_bound() >= 4000
        spool.max_bytes = 4050  # the size on disk is over it: the exact sum decides
        assert spool.has_room(50, fresh=True)
        assert not spool.has_room(51, fresh=True)
        spool.rotate(force=True)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            storage = conn.execute(
                "SELECT c.relname, a.attstorage FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname LIKE 'messages%%' AND a.attname = 'body' "
                "ORDER BY c.relname",
                (schema,),
            ).fetchall()
        assert storage == [("messages", "e"), ("messages_1", "e"), ("messages_2", "e")]
    finally:
        spool.close()


@pytest.mark.slow
def test_close_writes_the_settlements_kept_while_the_database_was_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A relay told to stop once the database answers again: close() threw away the
    acknowledgements kept in memory, silently, and the rows were sent again later."""
    with LocalPostgres() as own:
        spool = PostgresSpool(own.url, connect_timeout=1)
        try:
            lease = _leased_then_down(own, spool, "acme", 3)
            spool.ack(lease, lease.messages)  # kept in memory
            own.start_server()
        finally:
            spool.close()
        probe = PostgresSpool(own.url, connect_timeout=1)
        try:
            assert probe.empty()
        finally:
            probe.close()
        # And while the database is still away: said, not silent.
        spool = PostgresSpool(own.url, connect_timeout=1)
        try:
            lease = _leased_then_down(own, spool, "globex", 2)
            spool.ack(lease, lease.messages)
        finally:
            with caplog.at_level(logging.WARNING, logger="selligent_segment"):
                spool.close()
            own.start_server()
    assert "1 settlements of leased events could not be written" in caplog.text


@pytest.mark.slow
def test_a_start_that_fails_stops_its_server_and_removes_its_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: when ``LocalPostgres.start()`` failed after making its directory
    (here ``createdb``: the database ``postgres`` exists already), nothing cleaned up, as
    ``__exit__`` never runs: the server went on running and the ``/tmp/selligent-pg-*``
    directory stayed. Now start() stops the server, removes the directory and re-raises."""
    made: list[Path] = []
    mkdtemp = _local_postgres.tempfile.mkdtemp

    def recording_mkdtemp(prefix: str) -> str:
        made.append(Path(mkdtemp(prefix=prefix)))
        return str(made[-1])

    monkeypatch.setattr(_local_postgres.tempfile, "mkdtemp", recording_mkdtemp)
    own = LocalPostgres(database="postgres")
    try:
        with pytest.raises(PostgresUnavailable, match="createdb failed"):
            own.start()
        (root,) = made
        assert not root.exists()
        with pytest.raises(ConnectionRefusedError):  # nothing listens on its port any more
            socket.create_connection((own.host, own.port), timeout=5).close()
        assert repr(own) == "<LocalPostgres stopped>"
    finally:
        own.stop()  # before the fix: stops the server the failed start left running
