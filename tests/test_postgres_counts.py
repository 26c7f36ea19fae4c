"""The PostgreSQL spool's queue counts (schema version 2: ``queue_counts``, kept by triggers)
against a real server: ``stats()`` and ``spool status`` read them instead of the queue.

Each test compares the counts with the truth, a ``GROUP BY`` over ``messages`` done here,
after every way a row enters or leaves the queue; a version 1 schema (its DDL frozen below,
as release 1 wrote it) is migrated with its counts seeded; and the statistics collector
shows that neither ``stats()`` nor ``status()`` scans the queue's partitions.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment._errors import SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool import _postgres as pg_module
from selligent_segment.spool._postgres import (
    _ENQUEUE,
    SCHEMA_VERSION,
    PostgresSpool,
    compact_counts,
    ensure_schema,
)
from selligent_segment.spool._postgres_view import PostgresView, init_postgres
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)

#: The tables of schema version 1 exactly as release 1 created them (the ``enqueue``
#: function, unchanged since, is added from the module).
_V1_TABLES = """
CREATE TABLE IF NOT EXISTS {s}.meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    rotated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO {s}.meta (version) VALUES (1) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION {s}.generation() RETURNS BIGINT
    LANGUAGE sql STABLE AS $$ SELECT generation FROM {s}.meta $$;
CREATE SEQUENCE IF NOT EXISTS {s}.messages_id;
CREATE TABLE IF NOT EXISTS {s}.messages (
    generation BIGINT NOT NULL DEFAULT {s}.generation(),
    id BIGINT NOT NULL DEFAULT nextval('{s}.messages_id'),
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    owner TEXT,
    lease_until TIMESTAMPTZ,
    PRIMARY KEY (generation, id)
) PARTITION BY LIST (generation);
ALTER TABLE {s}.messages ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS {s}.messages_1 PARTITION OF {s}.messages FOR VALUES IN (1);
CREATE INDEX IF NOT EXISTS messages_queue ON {s}.messages (tenant, id);
CREATE INDEX IF NOT EXISTS messages_owner ON {s}.messages (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.dead_letters (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason TEXT NOT NULL,
    status INTEGER
);
CREATE INDEX IF NOT EXISTS dead_letters_tenant ON {s}.dead_letters (tenant, id);
CREATE TABLE IF NOT EXISTS {s}.paused (
    tenant TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.last_errors (
    tenant TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    status INTEGER
);
"""


@pytest.fixture
def schema() -> str:
    return f"counts_test_{next(_schemas)}"


@pytest.fixture
def spool(postgres: LocalPostgres, schema: str) -> Iterator[PostgresSpool]:
    spool = PostgresSpool(postgres.url, schema=schema, notify=False)
    try:
        yield spool
    finally:
        spool.close()


def _messages(tenant: str, n: int, start: int = 0) -> list[EncodedMessage]:
    """``n`` messages of ``tenant``, of differing sizes (so that bytes are checked too)."""
    return [
        EncodedMessage(tenant, f"{tenant}-{i}", EventKind.BOUNCED, b"x" * (10 + i % 7))
        for i in range(start, start + n)
    ]


def _truth(url: str, schema: str) -> dict[str, tuple[int, int]]:
    """``{tenant: (rows, body bytes)}`` read from the queue itself."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT tenant, count(*), sum(length(body)) FROM {schema}.messages GROUP BY tenant"
        ).fetchall()
    return {t: (int(n), int(b)) for t, n, b in rows}


def _counted(spool: PostgresSpool) -> dict[str, tuple[int, int]]:
    """``{tenant: (rows, body bytes)}`` as the counts say (through ``queue_totals()``), and
    checks ``stats()`` says the same."""
    with psycopg.connect(spool._url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT tenant, queued, nbytes FROM {spool.schema}.queue_totals()"
        ).fetchall()
    counted = {t: (int(n), int(b)) for t, n, b in rows}
    stats = spool.stats()
    assert stats.per_tenant == {t: n for t, (n, _) in counted.items()}
    assert stats.messages == sum(n for n, _ in counted.values())
    assert stats.nbytes == sum(b for _, b in counted.values())
    return counted


def _assert_exact(spool: PostgresSpool) -> dict[str, tuple[int, int]]:
    truth = _truth(spool._url, spool.schema)
    assert _counted(spool) == truth
    return truth


def test_the_counts_follow_every_write_of_this_package(spool: PostgresSpool) -> None:
    assert _assert_exact(spool) == {}
    assert spool.empty()
    spool.put_many(_messages("acme", 1))  # one prepared INSERT
    assert not spool.empty()
    spool.put_many(_messages("acme", 5, start=1) + _messages("globex", 3))  # INSERT unnest
    spool.put_many(_messages("acme", 100, start=6) + _messages("initech", 70))  # COPY
    assert _assert_exact(spool) == {
        "acme": (106, sum(10 + i % 7 for i in range(106))),
        "globex": (3, 30 + 1 + 2),
        "initech": (70, sum(10 + i % 7 for i in range(70))),
    }
    lease = spool.lease("acme", 30, 1 << 20)
    assert lease is not None
    assert spool.stats().leased == 30
    assert spool.stats().per_tenant["acme"] == 106  # leased rows are still queued
    spool.ack(lease, lease.messages[:10])
    spool.reject(lease, lease.messages[10:15], "rejected: bad", 400)  # a dead letter
    spool.release(lease, lease.messages[15:])
    assert spool.stats().leased == 0
    assert _assert_exact(spool)["acme"][0] == 91
    everything = spool.lease("globex", 10, 1 << 20)
    assert everything is not None
    spool.ack(everything, everything.messages)
    assert "globex" not in _assert_exact(spool)  # a drained tenant is no longer listed
    spool.maintain()  # compacts: one row per tenant left
    assert _assert_exact(spool)["initech"][0] == 70
    with psycopg.connect(spool._url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT tenant, count(*) FROM {spool.schema}.queue_counts GROUP BY tenant"
        ).fetchall()
    assert dict(rows) == {"acme": 1, "initech": 1}


def test_dead_letters_requeued_and_rows_enqueued_from_sql_are_counted(
    postgres: LocalPostgres, spool: PostgresSpool, schema: str
) -> None:
    spool.put_many(_messages("acme", 4))
    lease = spool.lease("acme", 4, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages, "rejected: bad", 400)
    assert _assert_exact(spool) == {}
    with PostgresView(f"{postgres.url}?spool_schema={schema}") as view:
        assert view.requeue(tenant="acme") == 4
    assert _assert_exact(spool)["acme"][0] == 4
    message = {
        "type": "track",
        "event": "Email Opened",
        "messageId": "sql-1",
        "userId": "u1",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"SELECT {schema}.enqueue('globex', %s::jsonb)", (json.dumps(message),))
        conn.execute(  # a service inserting directly, a statement of several tenants
            f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
            "SELECT 't' || (i % 3), 'direct-' || i, 'opened', '\\x7b7d'::bytea "
            "FROM generate_series(1, 10) AS i"
        )
        conn.execute(f"DELETE FROM {schema}.messages WHERE tenant = 't1'")
    assert _assert_exact(spool) == {
        "acme": _truth(postgres.url, schema)["acme"],
        "globex": _truth(postgres.url, schema)["globex"],
        "t0": (3, 6),
        "t2": (3, 6),
    }


def test_an_outbox_is_counted_when_committed_and_not_at_all_when_rolled_back(
    postgres: LocalPostgres, spool: PostgresSpool
) -> None:
    with psycopg.connect(postgres.url) as conn:
        spool.put_many(_messages("acme", 3), connection=conn)
        spool.put_many(_messages("acme", 200, start=3), connection=conn)
        assert _counted(spool) == {}  # not committed: nobody else sees it
        conn.rollback()
    assert _assert_exact(spool) == {}
    with psycopg.connect(postgres.url) as conn:
        spool.put_many(_messages("acme", 3), connection=conn)
        spool.maintain()  # a compaction meanwhile leaves the uncommitted deltas alone
        conn.commit()
    assert _assert_exact(spool) == {"acme": (3, 10 + 11 + 12)}


def test_rotation_keeps_the_counts(spool: PostgresSpool, schema: str) -> None:
    spool.put_many(_messages("acme", 100))
    assert spool.rotate(force=True) == 0  # the old partition still holds rows
    spool.put_many(_messages("acme", 5, start=100))
    lease = spool.lease("acme", 100, 1 << 20)  # the old partition's rows: the first 100
    assert lease is not None
    spool.ack(lease, lease.messages)
    assert spool.rotate(force=True) >= 1  # the drained partition is dropped whole
    with psycopg.connect(spool._url, autocommit=True) as conn:
        partitions = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            (f"{schema}.messages",),
        ).fetchall()
    assert partitions == [("messages_2",), ("messages_3",)]  # messages_1 dropped
    assert _assert_exact(spool) == {"acme": (5, sum(10 + i % 7 for i in range(100, 105)))}
    lease = spool.lease("acme", 5, 1 << 20)
    assert lease is not None
    assert not spool.empty()  # leased rows are still there
    spool.ack(lease, lease.messages)
    assert spool.empty()


def test_compaction_folds_the_deltas_atomically_one_process_at_a_time(
    postgres: LocalPostgres, spool: PostgresSpool, schema: str
) -> None:
    for i in range(20):
        spool.put_many(_messages("acme", 1, start=i) + _messages("globex", 1, start=i))
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.queue_counts").fetchone() == (40,)
        with psycopg.connect(postgres.url) as other:  # another process compacting now
            other.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:counts",))
            assert compact_counts(conn, schema) == 0  # skipped, not waited
        assert compact_counts(conn, schema) == 38
        assert conn.execute(f"SELECT count(*) FROM {schema}.queue_counts").fetchone() == (2,)
        assert compact_counts(conn, schema) == 0  # nothing to fold: nothing rewritten
    assert _assert_exact(spool)["acme"][0] == 20


def test_concurrent_writers_and_compactions_lose_nothing(
    postgres: LocalPostgres, spool: PostgresSpool, schema: str
) -> None:
    url = f"{postgres.url}?spool_schema={schema}&notify=off"
    program = (
        "import sys\n"
        "from selligent_segment._mapping import EncodedMessage\n"
        "from selligent_segment._record import EventKind\n"
        "from selligent_segment.spool._postgres import PostgresSpool\n"
        "spool = PostgresSpool(sys.argv[1])\n"
        "tenant = sys.argv[2]\n"
        "for i in range(60):\n"
        "    n = 1 if i % 3 else 80\n"
        "    spool.put_many([EncodedMessage(tenant, f'{tenant}-{i}-{k}', EventKind.OPENED,"
        " b'p' * (k % 5 + 1)) for k in range(n)])\n"
        "spool.close()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", program, url, f"proc{p}"]) for p in range(2)
    ]
    done = threading.Event()

    def write(k: int) -> None:
        for i in range(40):
            spool.put_many(_messages(f"thread{k}", 1 if i % 4 else 90, start=i * 100))

    def compact() -> None:
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            while not done.is_set():
                compact_counts(conn, schema)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    compactor = threading.Thread(target=compact)
    compactor.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    done.set()
    compactor.join()
    truth = _assert_exact(spool)
    assert truth["proc0"][0] == truth["proc1"][0] == 20 * 80 + 40
    assert truth["thread0"][0] == 10 * 90 + 30


def test_an_upgrade_blocked_by_an_open_transaction_gives_up_and_changes_nothing(
    postgres: LocalPostgres, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(_V1_TABLES.format(s=schema))
    monkeypatch.setattr(pg_module, "MIGRATION_LOCK_TIMEOUT", 0.2)
    url = f"{postgres.url}?spool_schema={schema}"
    with psycopg.connect(postgres.url) as outbox:  # an open outbox transaction
        outbox.execute(
            f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
            "VALUES ('acme', 'm-1', 'opened', '\\x7b7d')"
        )
        with pytest.raises(SpoolError, match=r"held it for 0\.2 s: nothing was changed"):
            init_postgres(url)
        outbox.rollback()
    with PostgresView(url) as view:
        assert view.version == 1
    assert init_postgres(url).endswith(f"migrated schema {schema} from version 1 to 2")


def test_a_version_1_schema_is_migrated_with_its_counts_seeded(
    postgres: LocalPostgres, schema: str
) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(_V1_TABLES.format(s=schema))
        conn.execute(_ENQUEUE.format(s=schema))
        conn.execute(
            f"INSERT INTO {schema}.messages (tenant, message_id, kind, body, owner, lease_until) "
            "SELECT 't' || (i % 4), 'm-' || i, 'opened', convert_to(repeat('y', i % 50), 'UTF8'), "
            "CASE WHEN i <= 8 THEN 'another-host' END, "
            "CASE WHEN i <= 8 THEN now() + interval '1 hour' END "
            "FROM generate_series(1, 1000) AS i"
        )
    url = f"{postgres.url}?spool_schema={schema}"
    with PostgresView(url) as view:  # an operator's view of the old version, as it is
        assert view.version == 1
        old = {t.tenant: (t.queued, t.leased) for t in view.status().tenants}
    assert init_postgres(url).endswith(f"migrated schema {schema} from version 1 to 2")
    assert init_postgres(url).endswith("nothing to do")
    spool = PostgresSpool(postgres.url, schema=schema, notify=False)
    try:
        assert _assert_exact(spool) == _truth(postgres.url, schema)
        assert spool.stats().messages == 1000
        assert spool.stats().leased == 8
        with PostgresView(url) as view:
            assert view.version == SCHEMA_VERSION == 2
            assert {t.tenant: (t.queued, t.leased) for t in view.status().tenants} == old
        spool.put_many(_messages("t0", 100))  # the triggers count from then on
        assert _assert_exact(spool)["t0"][0] == 350
    finally:
        spool.close()


def test_a_schema_created_now_is_at_version_2_with_its_counts_kept(
    postgres: LocalPostgres, schema: str
) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        assert ensure_schema(conn, schema) is None
        assert ensure_schema(conn, schema) == 2
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass ORDER BY tgname",
            (f"{schema}.messages",),
        ).fetchall()
    assert triggers == [("count_added",), ("count_removed",)]


def _attach_counting_trigger_as_another_role(
    postgres: LocalPostgres, schema: str, role: str
) -> Exception | None:
    """As ``role`` (allowed to use the schema, as a service role is, and to create tables
    of its own): a table shaped like the queue with the schema's counting function as its
    trigger, and a row in it. None when that worked (the row then counted as queued), or
    the error that stopped it."""
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    try:
        url = postgres.url.replace(f"//{postgres.user}@", f"//{role}@", 1)
        with psycopg.connect(url, autocommit=True) as own:
            own.execute(f"CREATE TABLE {role}.fake (tenant text, body bytea)")
            own.execute(
                f"CREATE TRIGGER forge AFTER INSERT ON {role}.fake REFERENCING NEW TABLE AS "
                f"added FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_added()"
            )
            own.execute(f"INSERT INTO {role}.fake VALUES ('forged', 'x')")
        return None
    except psycopg.Error as exc:
        return exc
    finally:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {role} CASCADE")
            admin.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_another_role_cannot_use_the_counting_functions_to_forge_counts(
    postgres: LocalPostgres, spool: PostgresSpool, schema: str
) -> None:
    """The counting functions run as the schema's owner (SECURITY DEFINER) and were
    executable by anyone: a role allowed to use the schema could attach them to a table
    of its own and count rows that are not queued (``flush()`` then never saw an empty
    queue)."""
    error = _attach_counting_trigger_as_another_role(postgres, schema, "intruder")
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "forged" not in spool.stats().per_tenant


def test_a_version_2_schema_made_before_is_guarded_by_its_owners_next_start(
    postgres: LocalPostgres, schema: str
) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        ensure_schema(conn, schema)
        conn.execute(  # as the release before made them: executable by anyone
            f"GRANT EXECUTE ON FUNCTION {schema}.count_added(), {schema}.count_removed() TO PUBLIC"
        )
        assert ensure_schema(conn, schema) == 2
    error = _attach_counting_trigger_as_another_role(postgres, schema, "intruder2")
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)


def _seq_scans(conn: psycopg.Connection[Any], schema: str) -> int:
    """Sequential scans of the queue's partitions so far, as the statistics say."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname LIKE 'messages%%'",
        (schema,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_neither_stats_nor_status_nor_has_room_scans_the_queue(
    postgres: LocalPostgres, spool: PostgresSpool, schema: str
) -> None:
    spool.put_many(_messages("acme", 300) + _messages("globex", 200))
    lease = spool.lease("acme", 50, 1 << 20)
    assert lease is not None
    flush = "SELECT pg_stat_force_next_flush()"  # the statistics of that connection, now
    with (
        psycopg.connect(postgres.url, autocommit=True) as conn,
        PostgresView(f"{postgres.url}?spool_schema={schema}") as view,
    ):
        spool._with(lambda c: c.execute(flush))
        view._run(lambda c: c.execute(flush))
        before = _seq_scans(conn, schema)
        # The control: the old way (one GROUP BY over the queue) shows in the counter.
        spool._with(lambda c: c.execute(f"SELECT count(*) FROM {schema}.messages").fetchall())
        spool._with(lambda c: c.execute(flush))
        scanned = _seq_scans(conn, schema)
        assert scanned > before
        total = 0
        for _ in range(3):
            assert not spool.empty()
            stats = spool.stats()
            total = stats.nbytes
            # The exact sum max_spool_bytes is checked against, the bound set to refuse:
            spool.max_bytes = total + 10
            assert spool.has_room(10, fresh=True)
            assert not spool.has_room(11, fresh=True)
            spool._with(lambda c: c.execute(flush))
            status = view.status()
            view._run(lambda c: c.execute(flush))
        assert _seq_scans(conn, schema) == scanned
    assert (stats.messages, stats.leased, stats.per_tenant) == (
        500,
        50,
        {"acme": 300, "globex": 200},
    )
    acme = next(t for t in status.tenants if t.tenant == "acme")
    assert (acme.queued, acme.leased) == (300, 50)
    assert acme.oldest_age is not None
    assert acme.oldest_age >= 0
    spool.release(lease, lease.messages)


#: One step of a writer or a sender: ("put", tenant, rows), ("lease", tenant, rows),
#: ("ack" | "reject" | "release", share of the oldest live lease), ("requeue",), ("compact",).
_STEPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["a", "b", "c"]), st.integers(1, 150)),
    st.tuples(st.just("lease"), st.sampled_from(["a", "b", "c"]), st.integers(1, 40)),
    st.tuples(st.sampled_from(["ack", "reject", "release"]), st.integers(0, 3)),
    st.tuples(st.just("requeue")),
    st.tuples(st.just("compact")),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(_STEPS, min_size=1, max_size=12))
def test_any_sequence_of_writes_and_settlements_keeps_the_counts_exact(
    postgres: LocalPostgres, steps: list[tuple[Any, ...]]
) -> None:
    schema = f"counts_prop_{next(_schemas)}"
    spool = PostgresSpool(postgres.url, schema=schema, notify=False)
    leases = []
    written = itertools.count()
    try:
        with PostgresView(f"{postgres.url}?spool_schema={schema}") as view:
            for step in steps:
                if step[0] == "put":
                    spool.put_many(_messages(step[1], step[2], start=next(written) * 1000))
                elif step[0] == "lease":
                    lease = spool.lease(step[1], step[2], 1 << 20)
                    if lease is not None:
                        leases.append(lease)
                elif step[0] in ("ack", "reject", "release") and leases:
                    lease = leases.pop(0)
                    part = lease.messages[: max(1, len(lease.messages) * step[1] // 3)]
                    if step[0] == "ack":
                        spool.ack(lease, part)
                    elif step[0] == "reject":
                        spool.reject(lease, part, "rejected: test", 400)
                    else:
                        spool.release(lease, part)
                    if len(part) < len(lease.messages):
                        spool.release(lease, lease.messages[len(part) :])
                elif step[0] == "requeue":
                    view.requeue()
                elif step[0] == "compact":
                    spool.maintain()
                _assert_exact(spool)
            held = sum(len(lease.messages) for lease in leases)
            assert spool.stats().leased == held
            queued = {t.tenant: (t.queued, t.leased) for t in view.status().tenants if t.queued}
            truth = _truth(postgres.url, schema)
            assert {t: q for t, (q, _) in queued.items()} == {t: n for t, (n, _) in truth.items()}
            assert sum(leased for _, leased in queued.values()) == held
    finally:
        spool.close()
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_application_name_keeps_pid_and_tag_whatever_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg_module.socket, "gethostname", lambda: "pod-" + "x" * 200)
    name = pg_module.application_name("selligent-segment", "selligent_segment")
    assert len(name) == 63
    assert name.startswith(f"selligent-segment selligent_segment {os.getpid()}.")
    assert pg_module._PROCESS_TAG in name


_POD = """
import socket, sys
socket.gethostname = lambda: sys.argv[1]  # a Kubernetes pod name
from selligent_segment.spool._postgres import PostgresSpool
spool = PostgresSpool(sys.argv[2], schema=sys.argv[3])
print("up", flush=True)
sys.stdin.read()
"""


def test_two_pods_of_one_deployment_count_as_two_processes(
    postgres: LocalPostgres, schema: str
) -> None:
    """connect() named a connection ``... HOST:PID`` cut to 63 characters: two pods whose
    names differ only at their end lost the part that differed, and counted as one."""
    pods = ["selligent-relay-7d9f8b6c5d-x2k4q", "selligent-relay-7d9f8b6c5d-9hzvt"]
    schema = (schema + "_" + "s" * 17)[:17]  # as long as the default, selligent_segment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _POD, pod, postgres.url, schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for pod in pods
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"up\n"
        with PostgresView(f"{postgres.url}?spool_schema={schema}") as view:
            assert view.status().processes == 2
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
