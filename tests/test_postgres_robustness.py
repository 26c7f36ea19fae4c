"""The PostgreSQL spool against what it is given from outside and what the database says:
texts PostgreSQL cannot hold, settlements it refuses, passwords, isolation levels, libpq
options, outbox transactions across a rotation.

Against the session's real server (conftest's ``postgres``); each test has its own schema.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _silent_proxy import SilentProxy

from selligent_segment._errors import ConfigurationError, SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool import _postgres
from selligent_segment.spool._postgres import PostgresSpool, pg_text
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)


@pytest.fixture
def schema() -> str:
    return f"robust_{next(_schemas)}"


@pytest.fixture
def spool(postgres: LocalPostgres, schema: str) -> Iterator[PostgresSpool]:
    opened = PostgresSpool(postgres.url, schema=schema, lease_seconds=1)
    yield opened
    opened.close()


def _messages(tenant: str, n: int) -> list[EncodedMessage]:
    return [EncodedMessage(tenant, f"{tenant}-{i}", EventKind.BOUNCED, b"{}") for i in range(n)]


def _leased(spool: PostgresSpool, tenant: str) -> list[str]:
    lease = spool.lease(tenant, 10, 1 << 20)
    return [] if lease is None else [m.message_id for m in lease.messages]


# -- 1. a settlement the database refuses never stops delivery ---------------------------


def test_pg_text_removes_nul_and_replaces_lone_surrogates() -> None:
    assert pg_text("a\x00b\ud800c\udfffd") == "ab\ufffdc\ufffdd"
    assert pg_text("plain é 😀 text") == "plain é 😀 text"


def test_a_reject_reason_with_nul_and_a_lone_surrogate_is_stored_cleaned(
    spool: PostgresSpool,
) -> None:
    spool.put_many(_messages("acme", 1) + _messages("globex", 1))
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages, "rejected: HTTP 400: bad a\x00b \ud800", 400)
    assert not spool._unwritten  # written, not kept in memory to be replayed
    assert spool.dead_letters() == [("acme", "acme-0", "rejected: HTTP 400: bad ab \ufffd", 400)]
    assert _leased(spool, "globex") == ["globex-0"]  # later leases are not held back
    spool.maintain()


def test_a_paused_reason_and_a_last_error_with_nul_are_recorded_cleaned(
    postgres: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    spool.mark_paused("acme", "paused: key \x00 refused \ud800")
    spool.note_error("acme", "HTTP 400: a\x00b", 1.0, 400)
    assert spool.paused() == {"acme": "paused: key  refused \ufffd"}
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        row = conn.execute(f"SELECT text FROM {schema}.last_errors").fetchone()
    assert row == ("HTTP 400: ab",)


def test_a_reject_the_database_refuses_is_written_with_a_plain_reason_never_kept(
    spool: PostgresSpool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_postgres, "pg_text", lambda text: text)  # the text reaches the server
    spool.put_many(_messages("acme", 2) + _messages("globex", 1))
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    with caplog.at_level(logging.ERROR, logger="selligent_segment"):
        spool.reject(lease, lease.messages[:1], "rejected: HTTP 400: a\x00b", 400)  # DataError
        spool.reject(lease, lease.messages[1:], "rejected: HTTP 400: \ud800", 400)  # encoding
    assert not spool._unwritten
    plain = "rejected: (the reason could not be stored)"
    assert spool.dead_letters() == [("acme", "acme-0", plain, 400), ("acme", "acme-1", plain, 400)]
    assert sum("could not be stored" in r.getMessage() for r in caplog.records) == 2
    assert _leased(spool, "globex") == ["globex-0"]
    spool.maintain()


def test_a_settlement_refused_for_good_is_logged_and_its_rows_are_leased_again_later(
    spool: PostgresSpool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool.put_many(_messages("acme", 1) + _messages("globex", 1))
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None

    def refused(*args: object) -> None:
        raise SpoolError("PostgreSQL spool: DataError: refused")

    with monkeypatch.context() as patch:
        patch.setattr(spool, "_settle", refused)
        with caplog.at_level(logging.ERROR, logger="selligent_segment"):
            spool.reject(lease, lease.messages, "rejected: HTTP 400: bad", 400)
    assert not spool._unwritten  # not replayed ahead of every later lease
    assert any("left in the queue" in r.getMessage() for r in caplog.records)
    assert _leased(spool, "globex") == ["globex-0"]
    assert _leased(spool, "acme") == []  # still under its lease
    time.sleep(1.2)
    assert _leased(spool, "acme") == ["acme-0"]  # never lost: sent again once it expired
    assert spool.dead_letters() == []


def test_only_an_unreachable_database_keeps_a_settlement_for_later(
    spool: PostgresSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool.put_many(_messages("acme", 1))
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    with monkeypatch.context() as patch:

        def away(*args: object) -> None:
            raise _postgres.Unreachable("PostgreSQL spool: OperationalError: gone")

        patch.setattr(spool, "_settle", away)
        spool.ack(lease, lease.messages)
        assert len(spool._unwritten) == 1
        with pytest.raises(_postgres.Unreachable):
            spool.lease("acme", 10, 1 << 20)
        assert len(spool._unwritten) == 1
    spool.maintain()  # answers again: written
    assert not spool._unwritten
    assert spool.empty()


# -- 2. a password never shows --------------------------------------------------------


def test_redact_hides_the_password_in_the_user_part_and_in_libpqs_query_parameters() -> None:
    assert _postgres.redact("postgresql://app:S3cret@db/mail") == "postgresql://app:***@db/mail"
    assert (
        _postgres.redact("postgresql://db/mail?sslmode=require&password=S3cret&sslpassword=K3y")
        == "postgresql://db/mail?sslmode=require&password=***&sslpassword=***"
    )
    assert (
        _postgres.redact("postgresql://db/m?pass%77ord=S3cret")
        == "postgresql://db/m?pass%77ord=***"
    )
    kept = "postgresql://app@db/mail?passfile=/etc/pgpass&options=-c%20a%3Db"
    assert _postgres.redact(kept) == kept  # a path and the options are no secrets
    # A raw "@" in the password: all of it up to the host's "@" (it showed "cret@db";
    # found by a review), and such a URL is refused without showing it.
    assert _postgres.redact("postgresql://app:se@cret@db/mail") == "postgresql://app:***@db/mail"
    with pytest.raises(ConfigurationError) as refused:
        PostgresSpool("postgresql://app:se@cret@127.0.0.1/mail")
    assert "cret" not in str(refused.value)
    assert "%40" in str(refused.value)


@pytest.mark.parametrize("password", ["Zq?S3cr#et9", "Zq#S3cr?et9", "Zq#S3cret9"])
def test_a_password_with_a_raw_question_mark_or_hash_is_never_shown(
    postgres: LocalPostgres, schema: str, password: str
) -> None:
    """libpq reads the user part up to the first ``@`` before any ``/``, so a password may
    hold a raw ``?`` or ``#``; the redaction cut it there and showed the rest (``S3cr#et9``)
    in reprs, error texts and the commands' output (found by a review)."""
    url = postgres.url.replace(f"{postgres.user}@", f"{postgres.user}:{password}@")
    assert _postgres.redact(url) == postgres.url.replace(
        f"{postgres.user}@", f"{postgres.user}:***@"
    )
    assert "S3cr" not in _postgres.without_passwords(url, f"libpq says {password}")
    spool = PostgresSpool(f"{url}?spool_schema={schema}")  # trust: the password is ignored
    try:
        assert spool.schema == schema  # the spool's options after such a password still read
        assert "S3cr" not in repr(spool)
        assert "et9" not in repr(spool)
    finally:
        spool.close()
    with pytest.raises(SpoolError) as caught:
        _postgres.connect(f"postgresql://app:{password}@127.0.0.1:1/mail", connect_timeout=1)
    assert "S3cr" not in str(caught.value)
    assert "et9" not in str(caught.value)
    assert "postgresql://app:***@127.0.0.1:1/mail" in str(caught.value)


def test_the_emitter_configs_repr_shows_the_spool_url_without_its_password() -> None:
    from selligent_segment._config import EmitterConfig

    shown = repr(EmitterConfig(write_key="wk", spool="postgresql://app:S3cretPw@db/mail"))
    assert "S3cretPw" not in shown
    assert "spool='postgresql://app:***@db/mail'" in shown
    query = repr(EmitterConfig(write_key="wk", spool="postgresql://app@db/mail?password=S3cretPw"))
    assert "S3cretPw" not in query
    assert "spool='/var/spool/mail.db'" in repr(
        EmitterConfig(write_key="wk", spool="/var/spool/mail.db")
    )


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://app@127.0.0.1:1/mail?password=S3cretPw", "S3cretPw"),
        ("postgresql://app:50%off-S3cret@127.0.0.1:1/mail", "off-S3cret"),  # libpq quotes it
        ("postgresql://app@127.0.0.1:1/mail?sslpassword=50%off-K3y", "off-K3y"),
    ],
)
def test_a_database_error_never_shows_a_password_even_one_libpq_quotes(
    url: str, secret: str
) -> None:
    with pytest.raises(SpoolError) as caught:
        _postgres.connect(url, connect_timeout=1)
    assert secret not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_without_passwords_removes_the_written_and_the_percent_decoded_form() -> None:
    url = "postgresql://app:p%40ss-S3cret@db/mail?password=Q%21uery"
    text = "bad p%40ss-S3cret, p@ss-S3cret, Q%21uery and Q!uery"
    assert _postgres.without_passwords(url, text) == "bad ***, ***, *** and ***"


def test_spool_and_view_reprs_and_status_never_show_a_query_password(
    postgres: LocalPostgres, schema: str
) -> None:
    from selligent_segment.spool._postgres_view import PostgresView

    url = f"{postgres.url}?password=S3cretPw&spool_schema={schema}"
    spool = PostgresSpool(url)
    try:
        assert "S3cretPw" not in repr(spool)
        with PostgresView(url) as view:
            assert "S3cretPw" not in repr(view)
            assert "S3cretPw" not in view.status().path
    finally:
        spool.close()


# -- 3. the spool's own connections are READ COMMITTED ------------------------------------


@pytest.fixture
def repeatable_read_db(postgres: LocalPostgres) -> Iterator[str]:
    """The URL of a database of its own whose default isolation is REPEATABLE READ."""
    import psycopg

    name = f"rr_{next(_schemas)}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        admin.execute(
            f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
        )
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_the_spool_runs_at_read_committed_whatever_the_databases_default(
    repeatable_read_db: str,
) -> None:
    import psycopg

    spool = PostgresSpool(repeatable_read_db)
    try:
        show = "SHOW transaction_isolation"
        in_block = spool._with(lambda conn: conn.execute(show).fetchone(), transaction=True)
        alone = spool._with(lambda conn: conn.execute(show).fetchone())
        assert in_block == ("read committed",)  # each transaction says so in its BEGIN
        # Never the session: behind a pooler in transaction mode a session setting stays
        # on a server connection other clients then use.
        assert alone == ("repeatable read",)
        with psycopg.connect(repeatable_read_db) as app:  # the caller's: left as it is
            spool.put_many(_messages("acme", 1), connection=app)
            assert app.execute(show).fetchone() == ("repeatable read",)
            app.commit()
        assert _leased(spool, "acme") == ["acme-0"]
    finally:
        spool.close()


def test_hosts_leasing_together_at_a_repeatable_read_default_never_fail(
    repeatable_read_db: str,
) -> None:
    import threading

    spools = [PostgresSpool(repeatable_read_db, lease_seconds=60) for _ in range(4)]
    spools[0].put_many(_messages("acme", 1200))
    errors: list[str] = []
    acked = [0]

    def work(spool: PostgresSpool) -> None:
        while True:
            try:
                lease = spool.lease("acme", 5, 1 << 20)
            except SpoolError as exc:
                errors.append(str(exc))
                continue
            if lease is None:
                return
            spool.ack(lease, lease.messages)
            acked[0] += len(lease.messages)

    threads = [threading.Thread(target=work, args=(s,)) for s in spools]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert acked[0] == 1200
        assert not any(s._unwritten for s in spools)
    finally:
        for spool in spools:
            spool.close()


# -- 4. libpq's options reach libpq as written ---------------------------------------------


def test_split_options_keeps_libpqs_parameters_as_written() -> None:
    url = "postgresql://u@h/db?options=-c%20statement_timeout%3D5000&lease_seconds=30&x=a+b"
    assert _postgres.split_options(url) == (
        "postgresql://u@h/db?options=-c%20statement_timeout%3D5000&x=a+b",
        {"lease_seconds": "30"},
    )


def test_a_libpq_options_parameter_with_an_encoded_space_takes_effect(
    postgres: LocalPostgres, schema: str
) -> None:
    url = f"{postgres.url}?options=-c%20statement_timeout%3D5000&spool_schema={schema}"
    spool = PostgresSpool(url)
    try:
        timeout = spool._with(lambda conn: conn.execute("SHOW statement_timeout").fetchone())
        assert timeout == ("5s",)
        assert spool.schema == schema
    finally:
        spool.close()


# -- 5. an outbox transaction at REPEATABLE READ or SERIALIZABLE across a rotation -------


@pytest.mark.parametrize("level", ["REPEATABLE_READ", "SERIALIZABLE"])
def test_an_outbox_insert_with_a_snapshot_older_than_a_rotation_still_finds_its_partition(
    postgres: LocalPostgres, schema: str, spool: PostgresSpool, level: str
) -> None:
    import psycopg

    with psycopg.connect(postgres.url) as app:
        app.isolation_level = psycopg.IsolationLevel[level]
        app.execute("SELECT 1").fetchone()  # the business transaction's snapshot
        assert spool.rotate(force=True) == 0  # messages_1 is empty, but app may still name it
        assert spool.rotate() == 0
        spool.put_many(_messages("acme", 1), connection=app)  # generation 1, as app reads it
        app.commit()
    assert _leased(spool, "acme") == ["acme-0"]
    assert spool.rotate(force=True) == 1  # messages_2 (empty): the snapshot is gone
    assert spool.stats().per_tenant == {"acme": 1}


def test_partitions_that_cannot_be_dropped_stop_piling_up(
    postgres: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    """While a snapshot holds the drops back (a long report, even a VACUUM of another
    table), each due rotation still attached a partition: five hours of it made 300, and
    a lease+ack took 108 ms instead of 3 (found by a review). Past MAX_PARTITIONS a due
    rotation attaches none until some are dropped (``force`` still does)."""
    import psycopg

    def partitions() -> int:
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE n.nspname = %s AND p.relname = 'messages'",
                (schema,),
            ).fetchone()
            assert row is not None
            return int(row[0])

    with psycopg.connect(postgres.url) as report:
        report.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        report.execute("SELECT 1").fetchone()  # an old snapshot, held
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            for _ in range(_postgres.MAX_PARTITIONS + 5):
                conn.execute(f"UPDATE {schema}.meta SET rotated_at = now() - interval '1 day'")
                assert spool.rotate() == 0
        assert partitions() == _postgres.MAX_PARTITIONS
        spool.rotate(force=True)
        assert partitions() == _postgres.MAX_PARTITIONS + 1
        report.rollback()
    # The snapshot gone, a forced rotation drops every partition but its new one (awaited:
    # a session of another test of this database may hold a snapshot a moment longer).
    spool.rotate(force=True)
    deadline = time.monotonic() + 30
    while partitions() > 1:  # what is left is dropped by the next rounds (not due: no attach)
        assert time.monotonic() < deadline, partitions()
        time.sleep(0.05)
        spool.rotate()


def test_an_old_snapshot_holds_back_only_the_partitions_it_may_name(
    postgres: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    # Each drained partition is judged against the rotation that retired it: a snapshot
    # taken after that rotation cannot name it. (Compared with the last rotation only,
    # any snapshot older than it held back every drop.)
    import psycopg

    def partitions() -> list[str]:
        return sorted(
            spool._with(
                lambda conn: [
                    name
                    for (name,) in conn.execute(
                        "SELECT c.relname FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent "
                        "JOIN pg_namespace n ON n.oid = p.relnamespace "
                        "WHERE n.nspname = %s AND p.relname = 'messages'",
                        (schema,),
                    ).fetchall()
                ]
            )
        )

    def snapshot() -> psycopg.Connection[Any]:
        conn = psycopg.connect(postgres.url)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("SELECT count(*) FROM pg_class").fetchone()
        return conn

    def close(conn: psycopg.Connection[Any]) -> None:
        """Close ``conn`` and wait until its backend is gone: the server ends a closed
        connection's transaction, and lets go of its snapshot, a moment later."""
        pid = conn.info.backend_pid
        conn.close()
        deadline = time.monotonic() + 10
        while spool._with(
            lambda c: c.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        ):
            assert time.monotonic() < deadline, "the closed connection's backend stayed"
            time.sleep(0.01)

    first = snapshot()
    assert [spool.rotate(force=True) for _ in range(2)] == [0, 0]  # first may name 1 or 2
    second = snapshot()  # after messages_1 and messages_2 were retired
    close(first)
    assert spool.rotate(force=True) == 2  # 1 and 2; not 3, which second may name
    assert partitions() == ["messages_3", "messages_4"]
    close(second)
    # Awaited, not assumed: any other session of the database (another test's pool, an
    # autovacuum worker) holding a snapshot for a moment holds the drops back, rightly.
    deadline = time.monotonic() + 10
    while spool._with(
        lambda c: c.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL"
        ).fetchone()
    ):
        assert time.monotonic() < deadline, "another session kept a snapshot open"
        time.sleep(0.01)
    assert spool.rotate(force=True) == 2
    assert partitions() == ["messages_5"]


# -- 6. behind a pooler in transaction mode: no session state outlives a transaction -----


class _SessionWatch:
    """A spool connection that, each time it is back outside a transaction (where a pooler
    in transaction mode lends its server connection to another client, and may lend the
    client another one next), notes the session state left on it: advisory locks held,
    statements prepared."""

    def __init__(self, conn: psycopg.Connection[Any], left: list[str]) -> None:
        self._conn = conn
        self._left = left

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._conn.execute(*args, **kwargs)
        self._look(str(args[0])[:60])
        return cursor

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._conn.transaction() as tx:
            yield tx
        self._look("a transaction")

    def _look(self, after: str) -> None:
        if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()), (SELECT count(*) FROM pg_prepared_statements)",
            prepare=False,
        ).fetchone()
        assert row is not None
        if row[0]:
            self._left.append(f"advisory lock after {after}")
        if row[1]:
            self._left.append(f"prepared statement after {after}")


@pytest.fixture
def left(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session state the spool's connections were left with between transactions."""
    found: list[str] = []
    real = _postgres.connect
    monkeypatch.setattr(_postgres, "connect", lambda *a, **k: _SessionWatch(real(*a, **k), found))
    return found


def test_a_rotation_holds_its_lock_only_inside_a_transaction(
    postgres: LocalPostgres, schema: str, left: list[str]
) -> None:
    """The rotation took a session-level advisory lock and released it in another
    autocommit statement: behind a pooler in transaction mode the two may run on different
    server connections, and the lock then stays on one for good, every rotation of every
    host skipped from then on (found by a review). Each step now takes
    ``pg_try_advisory_xact_lock`` in its own transaction."""
    spool = PostgresSpool(f"{postgres.url}?spool_schema={schema}&notify=off")
    try:
        spool.put_many(_messages("acme", 2))
        assert spool.rotate(force=True) == 0
        assert _leased(spool, "acme") == ["acme-0", "acme-1"]
        spool.close()  # the lease given back
        spool = PostgresSpool(f"{postgres.url}?spool_schema={schema}&notify=off")
        lease = spool.lease("acme", 10, 1 << 20)
        assert lease is not None
        spool.ack(lease, lease.messages)
        assert spool.rotate(force=True) == 2
    finally:
        spool.close()
    assert [x for x in left if "advisory" in x] == []


def test_with_notify_off_no_statement_is_prepared_on_the_server(
    postgres: LocalPostgres, schema: str, left: list[str]
) -> None:
    """``notify=off`` is the setting for a pooler in transaction mode, but the spool
    prepared statements on the server (``prepare=True``, and psycopg's own after five
    runs): behind pgbouncer before 1.21 (or ``max_prepared_statements = 0``) the next
    transaction, on another server connection, fails with ``prepared statement "_pg3_0"
    does not exist`` (found by a review). With ``notify=off`` nothing is prepared."""
    spool = PostgresSpool(f"{postgres.url}?spool_schema={schema}&notify=off")
    try:
        for round_ in range(7):  # past psycopg's prepare_threshold (5)
            spool.put_many(_messages(f"t{round_}", 1))
            spool.put_many(_messages(f"g{round_}", 3))
            spool.put_many(_messages(f"c{round_}", _postgres.GROUP_MAX + 1))
            assert spool.has_room(10, fresh=True)
            assert spool.tenants()
            spool.stats()
            for tenant in (f"t{round_}", f"g{round_}", f"c{round_}"):
                lease = spool.lease(tenant, 100, 1 << 20)
                assert lease is not None
                spool.ack(lease, lease.messages)
            spool.maintain()
            spool.rotate(force=True)
    finally:
        spool.close()
    assert left == []


def test_a_view_used_in_a_forked_child_leaves_the_parents_connection_alone(
    postgres: LocalPostgres, schema: str, spool: PostgresSpool
) -> None:
    # As a SpoolFile does: the child gets its own connection, and closing the view there
    # never closes the one it inherited (that would end the parent's session).
    import os

    from selligent_segment.spool._postgres_view import PostgresView

    spool.put_many(_messages("acme", 2))
    view = PostgresView(f"{postgres.url}?spool_schema={schema}")
    try:
        parents = view._conn
        pid = os.fork()
        if pid == 0:  # the child: read, close, and leave at once
            code = 1
            try:
                if view.status().tenants[0].queued == 2 and view._conn is not parents:
                    view.close()
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert view._conn is parents
        assert view.status().tenants[0].queued == 2  # the parent's session still works
    finally:
        view.close()


@pytest.mark.slow
def test_a_lease_whose_host_went_silent_mid_transaction_frees_its_rows(
    postgres: LocalPostgres, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A's network goes silent while its lease decodes a record, before the commit:
    the server kept the session idle in transaction, its rows locked, so another host's
    SKIP LOCKED passed them by long after the lease ran out (until TCP gave up, up to
    hours). The lease's transaction now limits its idle time to half the lease."""
    proxy = SilentProxy(postgres.url)
    host_a = PostgresSpool(proxy.url, schema=schema, lease_seconds=2, connect_timeout=2)
    host_b = PostgresSpool(postgres.url, schema=schema, lease_seconds=2, owner="host-b")
    try:
        host_a.put_rows([("acme", "", "bounced", b"not a record")])
        decode = _postgres.decode

        def decode_then_go_silent(tenant: str, body: bytes) -> Any:
            proxy.go_silent()  # no FIN, no RST: the server cannot tell
            return decode(tenant, body)

        monkeypatch.setattr(_postgres, "decode", decode_then_go_silent)

        def lease_on_host_a() -> None:
            with contextlib.suppress(SpoolError):  # its connection is cut in the end
                host_a.lease("acme", 10, 1 << 20)

        threading.Thread(target=lease_on_host_a, daemon=True).start()
        deadline = time.monotonic() + 30
        taken = None
        while taken is None and not host_b.dead_letters() and time.monotonic() < deadline:
            time.sleep(0.2)  # the lease runs out on the server's clock: asked again
            taken = host_b.lease("acme", 10, 1 << 20)
        assert taken is not None or host_b.dead_letters()
        assert time.monotonic() < deadline
    finally:
        proxy.close()
        host_b.close()


def test_a_late_settlement_of_an_expired_lease_leaves_a_newer_lease_alone(
    postgres: LocalPostgres, schema: str
) -> None:
    """The owner of a lease was the whole process: a sender's late answer to a lease
    that had run out (a slow request, a long bisection) acted on the rows another sender
    of the same process had leased since: a release let another host take them while
    they were being sent, a reject buried rows that were then delivered."""
    a = PostgresSpool(postgres.url, schema=schema, lease_seconds=1)
    b = PostgresSpool(postgres.url, schema=schema, lease_seconds=30, owner="host-b")
    try:
        a.put_many(_messages("acme", 3) + _messages("beta", 1))
        first = a.lease("acme", 10, 1 << 20)
        first_beta = a.lease("beta", 10, 1 << 20)
        assert first is not None
        assert first_beta is not None
        with psycopg.connect(postgres.url, autocommit=True) as conn:  # both run out
            conn.execute(f"UPDATE {schema}.messages SET lease_until = now() - interval '1 second'")
        a.lease_seconds = 30
        second = a.lease("acme", 10, 1 << 20)
        second_beta = a.lease("beta", 10, 1 << 20)
        assert second is not None
        assert second_beta is not None
        assert len(second.messages) == 3
        a.release(first, first.messages)  # the first sender's late 5xx
        assert b.lease("acme", 10, 1 << 20) is None  # still the second's
        a.reject(first_beta, first_beta.messages, "rejected: HTTP 400", 400)  # late too
        a.ack(second_beta, second_beta.messages)  # delivered by the second
        assert a.dead_letters() == []
        assert a.stats().messages == 3
    finally:
        a.close()
        b.close()


def test_two_spools_of_one_owner_name_never_settle_each_others_leases(
    postgres: LocalPostgres, schema: str
) -> None:
    """A lease's owner was the spool's name and the lease's number, numbered from 1 in
    each spool: two Emitters of one process on one URL (or two hosts of one hostname and
    pid, in containers) gave their leases the same owner, and a late settlement of one
    acted on the other's live lease (found by a review). Each spool's leases are now
    told apart by a random tag of its own."""
    a = PostgresSpool(postgres.url, schema=schema, lease_seconds=1, owner="same")
    b = PostgresSpool(postgres.url, schema=schema, lease_seconds=30, owner="same")
    try:
        a.put_many(_messages("acme", 3))
        first = a.lease("acme", 10, 1 << 20)
        assert first is not None
        with psycopg.connect(postgres.url, autocommit=True) as conn:  # a's lease runs out
            conn.execute(f"UPDATE {schema}.messages SET lease_until = now() - interval '1 second'")
        second = b.lease("acme", 10, 1 << 20)  # b's first lease too
        assert second is not None
        assert len(second.messages) == 3
        a.ack(first, first.messages[:1])  # a's late answers
        a.reject(first, first.messages[1:2], "rejected: HTTP 400", 400)
        a.release(first, first.messages[2:])
        assert a.dead_letters() == []
        assert a.stats().messages == 3
        assert a.lease("acme", 10, 1 << 20) is None  # all still b's
    finally:
        a.close()
        b.close()


def test_a_silent_network_is_bounded_by_tcp_settings_unless_the_url_gives_its_own(
    postgres: LocalPostgres,
) -> None:
    """Nothing bounded a query on an open connection whose network went silent: the
    operating system's TCP waits two hours and more, and emit with it."""
    conn = _postgres.connect(postgres.url)
    try:
        params = conn.info.get_parameters()
    finally:
        conn.close()
    for name, value in _postgres.SILENT_NETWORK_LIMITS.items():
        assert params.get(name) == value
    conn = _postgres.connect(f"{postgres.url}?tcp_user_timeout=5000&keepalives_idle=7")
    try:
        params = conn.info.get_parameters()
    finally:
        conn.close()
    assert params["tcp_user_timeout"] == "5000"
    assert params["keepalives_idle"] == "7"
    assert params["keepalives_count"] == "3"
