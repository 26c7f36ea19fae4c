"""The durable spool when its file cannot be written: locked by another connection past
the busy timeout, or on a full disk. Delivery goes on, what is settled is kept in memory
and written later, nothing is lost and nothing hangs.

Real SQLite files (in tmp_path, or on a small tmpfs for the full disk), a real second
connection holding the lock, real HTTP to LocalSegment on loopback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _delivery import record

from selligent_segment import (
    BatchPolicy,
    Emitter,
    EncodedMessage,
    RetryPolicy,
    encode,
    message_id,
)
from selligent_segment.spool import _sqlite as _sqlite_spool
from selligent_segment.spool._file import SpoolFile
from selligent_segment.spool._schema import open_db
from selligent_segment.spool._sqlite import SqliteSpool
from selligent_segment.testing import LocalSegment

EMITTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=1_000_000)
BUSY_MS = 200


@pytest.fixture(autouse=True)
def _short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spool's connections give up on a locked file after 0.2 s instead of 30 s."""

    def impatient(path: Path, **options: Any) -> sqlite3.Connection:
        db = open_db(path, **options)
        db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        return db

    monkeypatch.setattr(_sqlite_spool, "open_db", impatient)


class Locker:
    """Another connection to the file, which takes its write lock (``BEGIN EXCLUSIVE``)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.held = threading.Event()
        self._mutex = threading.Lock()

    def lock(self) -> None:
        with self._mutex:
            if not self.held.is_set():
                self.db.execute("BEGIN EXCLUSIVE")
                self.held.set()

    def unlock(self) -> None:
        with self._mutex:
            if self.held.is_set():
                self.db.execute("ROLLBACK")
                self.held.clear()

    def close(self) -> None:
        self.unlock()
        self.db.close()


Lockers = Callable[[Path], Locker]


@pytest.fixture
def locker() -> Iterator[Lockers]:
    """Makes a Locker of an existing spool file; closes them all after the test."""
    lockers: list[Locker] = []

    def make(path: Path) -> Locker:
        lockers.append(Locker(path))
        return lockers[-1]

    yield make
    for one in lockers:
        one.close()


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return db.execute(sql, args).fetchall()


def messages(n: int, tenant: str = "acme", start: int = 0) -> list[EncodedMessage]:
    return [encode(record(i, tenant), now=EMITTED) for i in range(start, start + n)]


def open_spool(path: Path) -> SqliteSpool:
    def decode(payload: bytes) -> EncodedMessage:
        raise AssertionError("every row here holds an encoded message")

    return SqliteSpool(path, max_bytes=16 * 1024 * 1024, decoder=decode)


def mids(items: Any) -> list[str]:
    return [m.message_id for m in items]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


# -- the file is locked past the busy timeout --------------------------------------------------


@pytest.mark.fault_injection
def test_an_ack_that_cannot_be_written_still_lets_flush_finish(
    tmp_path: Path, locker: Lockers, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    open_spool(path).close()
    lock = locker(path)

    def lock_the_file(item: Any) -> None:  # while Segment handles the batch
        lock.lock()

    records = [record(i) for i in range(40)]
    with LocalSegment(refuse=lock_the_file) as server:
        em = Emitter(
            endpoint=server.url,
            spool=path,
            write_keys={"acme": "key-acme"},
            retry=FAST_RETRY,
            batch=BatchPolicy(linger=0.0),
        )
        try:
            caplog.set_level(logging.WARNING, logger="selligent_segment")
            assert em.emit_many(records).accepted == 40
            # Delivered, but the deletes wait: the file is still locked by the other
            # connection, and flush() reports what this process knows.
            assert em.flush(timeout=10)
            assert lock.held.is_set()
            assert server.message_ids() == {message_id(r) for r in records}
            stats = em.stats()
            assert (stats.accepted, stats.delivered, stats.queued) == (40, 40, 0)
            assert query(path, "SELECT count(*) FROM messages") == [(40,)]  # not written yet
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1
            assert "cannot write (database is locked)" in errors[0].getMessage()
            assert not tracebacks(caplog)

            lock.unlock()
            assert em.flush(timeout=10)  # its upkeep writes what waited
            assert query(path, "SELECT count(*) FROM messages") == [(0,)]
            assert em.stats().queued == 0
            assert any("can be written again" in r.getMessage() for r in caplog.records)
            assert server.duplicates == 0
        finally:
            em.close()
    assert not tracebacks(caplog)


@pytest.mark.slow
def test_settlements_that_cannot_be_written_count_at_once_and_are_written_later(
    tmp_path: Path, locker: Lockers
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(10)
    spool.put_many(batch)
    first = spool.lease("acme", 4, 1 << 20)
    second = spool.lease("acme", 3, 1 << 20)
    assert first is not None
    assert second is not None
    lock = locker(path)
    lock.lock()

    # None of these can be written; none raises.
    spool.release(first, first.messages)
    spool.reject(second, second.messages[1:], "rejected: batch item 0: poison", 400)
    spool.ack(second, second.messages[:1])
    assert spool.backlog("acme") == 7
    stats = spool.stats()
    assert (stats.messages, stats.leased, stats.per_tenant) == (7, 0, {"acme": 7})

    # The released messages come back first, in order, before the newer ones; the lease
    # itself is held in memory (the file is still locked).
    again = spool.lease("acme", 5, 1 << 20)
    assert again is not None
    assert mids(again.messages) == mids(batch[:4] + batch[7:8])
    assert spool.stats().leased == 5
    rest = spool.lease("acme", 100, 1 << 20)
    assert rest is not None
    assert mids(rest.messages) == mids(batch[8:])  # never a message leased twice
    assert spool.lease("acme", 100, 1 << 20) is None
    spool.ack(again, again.messages)
    assert not spool.empty()
    spool.ack(rest, rest.messages)
    assert spool.empty()
    assert spool.stats().messages == 0
    assert query(path, "SELECT count(*) FROM messages") == [(10,)]
    assert query(path, "SELECT count(*) FROM dead_letters") == [(0,)]

    lock.unlock()
    spool.maintain()  # upkeep writes what waited
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]
    rows = query(path, "SELECT message_id, body, reason, status FROM dead_letters ORDER BY id")
    assert rows == [
        (m.message_id, m.body, "rejected: batch item 0: poison", 400) for m in batch[5:7]
    ]
    spool.close()


def test_a_release_written_later_is_leased_once(tmp_path: Path, locker: Lockers) -> None:
    # The released rows go back to the file when it can be written again; from then on
    # the file's queue alone offers them, once, in order.
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(6)
    spool.put_many(batch)
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    lock = locker(path)
    lock.lock()
    spool.release(lease, lease.messages)
    lock.unlock()
    spool.maintain()
    assert query(path, "SELECT count(owner) FROM messages") == [(0,)]
    assert spool.backlog("acme") == 6
    again = spool.lease("acme", 100, 1 << 20)
    assert again is not None
    assert mids(again.messages) == mids(batch)
    spool.close()


def test_close_writes_what_waited_when_the_file_can_be_written_again(
    tmp_path: Path, locker: Lockers
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    spool.put_many(messages(3))
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    lock = locker(path)
    lock.lock()
    spool.ack(lease, lease.messages)
    lock.unlock()
    spool.close()  # not sent again by the next process: deleted now
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


# -- the paused mark --------------------------------------------------------------------------


def test_a_delivery_by_another_process_clears_the_paused_mark(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    paused = threading.Event()
    with LocalSegment(write_keys={"key-new"}) as server:
        old = Emitter(
            endpoint=server.url,
            spool=path,
            write_keys={"acme": "key-old"},
            retry=FAST_RETRY,
            batch=BatchPolicy(linger=0.0),
            on_pause=lambda tenant, reason: paused.set(),
        )
        try:
            assert old.emit(record(1))
            assert paused.wait(10)  # set after the mark is written
            with SpoolFile(path) as spool:
                (acme,) = spool.status().tenants
                assert acme.paused == "write key refused (401)"
            with Emitter(
                endpoint=server.url,
                spool=path,
                write_keys={"acme": "key-new"},
                retry=FAST_RETRY,
                batch=BatchPolicy(linger=0.0),
            ) as new:
                assert new.emit(record(2))
                assert new.flush(timeout=10)
            assert server.message_ids() == {message_id(record(i)) for i in (1, 2)}
            with SpoolFile(path) as spool:
                assert [t.paused for t in spool.status().tenants if t.paused] == []
        finally:
            old.close(timeout=1)


def test_a_pause_mark_that_cannot_be_written_is_written_later(
    tmp_path: Path, locker: Lockers
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    lock = locker(path)
    lock.lock()
    spool.mark_paused("acme", "write key refused (401)")  # does not raise
    assert query(path, "SELECT count(*) FROM paused") == [(0,)]
    lock.unlock()
    spool.maintain()
    assert query(path, "SELECT tenant, reason FROM paused") == [("acme", "write key refused (401)")]
    spool.close()


# -- the disk is full -------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system of ``directory``; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.fault_injection
def test_delivery_drains_the_spool_on_a_full_disk(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_disk / "spool.db"
    acme, globex = messages(150, "acme"), messages(150, "globex")
    spool = open_spool(path)
    spool.put_many(acme + globex)
    spool.close()

    caplog.set_level(logging.WARNING, logger="selligent_segment")
    gate = threading.Event()

    def key(tenant: str) -> str:  # the senders wait until the disk is full
        gate.wait(30)
        return f"key-{tenant}"

    with LocalSegment() as server:
        em = Emitter(
            endpoint=server.url,
            spool=path,
            write_keys=key,
            retry=FAST_RETRY,
            batch=BatchPolicy(max_messages=20, linger=0.0),
        )
        try:
            filler = fill(small_disk)
            gate.set()
            assert em.flush(timeout=30)
            assert server.message_ids() == {m.message_id for m in acme + globex}
            stats = em.stats()
            assert (stats.delivered, stats.queued) == (300, 0)
            assert query(path, "SELECT count(*) FROM messages") == [(300,)]  # not yet
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1  # once, not once a second
            assert f"spool file {path}: the disk is full; delivery goes on" in errors[0]
            assert not tracebacks(caplog)

            filler.unlink()  # room again: upkeep writes what waited
            assert em.flush(timeout=10)
            assert query(path, "SELECT count(*) FROM messages") == [(0,)]
        finally:
            em.close()
    assert not tracebacks(caplog)


def test_a_row_another_process_replaced_under_the_same_id_is_never_settled_here(
    tmp_path: Path, locker: Lockers
) -> None:
    # Leased in memory, a row is free in the file: another process may send and delete
    # it, and SQLite may give its id to the next row inserted. That new row is not ours.
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(3)
    spool.put_many(batch)
    lock = locker(path)
    lock.lock()
    lease = spool.lease("acme", 3, 1 << 20)  # held in memory: the file is locked
    assert lease is not None
    assert query(path, "SELECT count(owner) FROM messages") == [(0,)]
    (newer,) = messages(1, start=3)
    lock.db.execute("DELETE FROM messages WHERE id = 3")  # the other process's ack
    lock.db.execute(
        "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) "
        "VALUES ('acme', ?, 'delivered', ?, 4e9)",
        (newer.message_id, newer.body),
    )
    lock.db.execute("COMMIT")
    lock.held.clear()
    assert query(path, "SELECT id, message_id FROM messages WHERE id = 3") == [
        (3, newer.message_id)
    ]

    assert not spool.empty()
    spool.ack(lease, lease.messages)
    assert query(path, "SELECT id, message_id FROM messages") == [(3, newer.message_id)]
    assert not spool.empty()
    assert spool.stats().per_tenant == {"acme": 1}
    again = spool.lease("acme", 100, 1 << 20)
    assert again is not None
    assert mids(again.messages) == [newer.message_id]
    spool.close()


@pytest.mark.slow
def test_while_writes_fail_a_locked_file_costs_a_short_wait_not_the_busy_timeout(
    tmp_path: Path, locker: Lockers
) -> None:
    """After a write failed, statements wait at most a quarter of a second for the lock
    (not the busy timeout each time) until a write goes through; then the usual patience
    is back."""
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    spool._db.execute("PRAGMA busy_timeout = 1000")  # the file's usual patience here
    spool.put_many(messages(3))
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    lock = locker(path)
    lock.lock()
    spool.ack(lease, lease.messages)  # waits the usual 1 s once, then keeps the ack
    assert spool._db.execute("PRAGMA busy_timeout").fetchone() == (250,)
    lock.unlock()
    spool.maintain(force=True)  # upkeep writes what waited
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]
    assert spool._db.execute("PRAGMA busy_timeout").fetchone() == (1000,)
    spool.close()
