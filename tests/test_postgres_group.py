"""Group commits of concurrent ``put_many``/``emit`` calls (spool/_postgres.py,
``_GroupCommit``) against a real server: callers that arrive while a group is being
written share the next statement and commit, each returns once its rows are committed,
a failed group reaches every one of its callers and writes none of its rows, and nothing
is written twice. The groups are made deterministic by holding the queue table locked
from another session while the first caller writes: the test waits on conditions (how
many callers wait), never on timing."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from selligent_segment._errors import SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool._postgres import PostgresSpool
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)


@pytest.fixture
def spool(postgres: LocalPostgres) -> Iterator[PostgresSpool]:
    s = PostgresSpool(postgres.url, schema=f"group_test_{next(_schemas)}")
    yield s
    s.close()


def _message(tenant: str, i: int) -> EncodedMessage:
    return EncodedMessage(tenant, f"{tenant}-{i}", EventKind.OPENED, b'{"n": %d}' % i)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # a bound for a broken build, not what is tested
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _rows(postgres: LocalPostgres, schema: str) -> list[tuple[str, str]]:
    """(message_id, xmin) of every row: rows of one transaction share an xmin."""
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT message_id, xmin::text FROM {schema}.messages ORDER BY id"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


class _Callers:
    """Threads each calling ``spool.put_many([message])``; what each got."""

    def __init__(self, spool: PostgresSpool) -> None:
        self.spool = spool
        self.threads: list[threading.Thread] = []
        self.outcomes: dict[str, str] = {}

    def start(self, message: EncodedMessage) -> None:
        def run() -> None:
            try:
                self.spool.put_many([message])
                self.outcomes[message.message_id] = "ok"
            except SpoolError as exc:
                self.outcomes[message.message_id] = f"SpoolError: {exc}"

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()


def _locked(postgres: LocalPostgres, schema: str) -> psycopg.Connection[object]:
    """A session holding the queue table so that inserts wait for it."""
    conn = psycopg.connect(postgres.url)
    conn.execute(f"LOCK TABLE {schema}.messages IN ACCESS EXCLUSIVE MODE")
    return conn


def _inserting_waits(postgres: LocalPostgres) -> bool:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%INSERT INTO %%messages%%'"
        ).fetchone()
    return bool(row and row[0])


def test_callers_arriving_while_a_group_is_written_share_one_commit(
    spool: PostgresSpool, postgres: LocalPostgres
) -> None:
    callers = _Callers(spool)
    holder = _locked(postgres, spool.schema)
    try:
        callers.start(_message("acme", 0))  # the first caller writes alone, and waits
        _until(lambda: _inserting_waits(postgres), "the first insert waits on the lock")
        for i in range(1, 6):
            callers.start(_message("acme" if i % 2 else "globex", i))
        _until(lambda: spool._group.waiting() == 5, "five callers gather in the next group")
        assert callers.outcomes == {}  # nobody returned before its commit
    finally:
        holder.rollback()
        holder.close()
    callers.join()
    expected = ["acme-0", "acme-1", "globex-2", "acme-3", "globex-4", "acme-5"]
    assert callers.outcomes == dict.fromkeys(expected, "ok")
    rows = _rows(postgres, spool.schema)
    assert sorted(m for m, _ in rows) == sorted(callers.outcomes)  # each row once
    first, *grouped = rows
    assert first[0] == "acme-0"
    assert len({xmin for _, xmin in grouped}) == 1  # one transaction for the five
    assert first[1] != grouped[0][1]
    spool.tenants()
    assert spool.backlog("acme") == 4
    assert spool.backlog("globex") == 2


def test_a_failed_group_reaches_every_caller_and_writes_none_of_its_rows(
    spool: PostgresSpool, postgres: LocalPostgres
) -> None:
    callers = _Callers(spool)
    holder = _locked(postgres, spool.schema)
    try:
        callers.start(_message("acme", 0))
        _until(lambda: _inserting_waits(postgres), "the first insert waits on the lock")
        callers.start(_message("acme", 1))
        callers.start(_message("bad\x00tenant", 2))  # PostgreSQL text refuses NUL
        callers.start(_message("acme", 3))
        _until(lambda: spool._group.waiting() == 3, "three callers gather in the next group")
    finally:
        holder.rollback()
        holder.close()
    callers.join()
    assert callers.outcomes["acme-0"] == "ok"
    failed = {k: v for k, v in callers.outcomes.items() if k != "acme-0"}
    assert sorted(failed) == ["acme-1", "acme-3", "bad\x00tenant-2"]
    assert all(v.startswith("SpoolError: PostgreSQL spool postgresql://") for v in failed.values())
    assert [m for m, _ in _rows(postgres, spool.schema)] == ["acme-0"]
    spool.put_many([_message("acme", 4)])  # the next group is written as usual
    assert [m for m, _ in _rows(postgres, spool.schema)] == ["acme-0", "acme-4"]


def test_many_threads_write_every_row_exactly_once(
    spool: PostgresSpool, postgres: LocalPostgres
) -> None:
    def work(k: int) -> None:
        for i in range(100):
            spool.put_many([_message(f"t{k}", i)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    rows = _rows(postgres, spool.schema)
    assert len(rows) == 800
    assert {m for m, _ in rows} == {f"t{k}-{i}" for k in range(8) for i in range(100)}
    for k in range(8):  # each thread's rows in its order
        mine = [m for m, _ in rows if m.startswith(f"t{k}-")]
        assert mine == [f"t{k}-{i}" for i in range(100)]
