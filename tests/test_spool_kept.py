"""Rows the durable spool keeps in memory as it writes them (``put_many(keep=True)``) and
acknowledgements it leaves for the next write (``defer_acks``): the queue is the same
queue, in the same order, with the same counts, whatever is kept or deferred; what is
kept is leased to this process in the file, and freed like any lease."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _delivery import emitter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_documented_promises import wait_until

from selligent_segment import DeliveryFailure, EncodedMessage, InvalidEvent, SpoolError
from selligent_segment.intake import _journal
from selligent_segment.spool import _sqlite
from selligent_segment.spool._protocol import Lease
from selligent_segment.spool._sqlite import SqliteSpool
from selligent_segment.testing import LocalSegment


def _never(_: bytes) -> EncodedMessage:
    raise InvalidEvent("record", "no journal record here")


def _message(index: int, tenant: str = "acme", size: int = 20) -> EncodedMessage:
    return EncodedMessage(tenant, f"m{index:05d}", "track", b"x" * size)


def _spool(path: Path, **options: Any) -> SqliteSpool:
    """A spool on ``path`` (16 MiB, no journal records to decode), ``options`` added."""
    return SqliteSpool(path, max_bytes=options.pop("max_bytes", 1 << 24), decoder=_never, **options)


def _leased(spool: SqliteSpool, max_messages: int = 10, tenant: str = "acme") -> Lease:
    """A lease of ``spool`` (asserted: there is one)."""
    lease = spool.lease(tenant, max_messages, 1 << 20)
    assert lease is not None
    return lease


def _ids(lease: Lease) -> list[str]:
    """The message ids of ``lease``, in order."""
    return [m.message_id for m in lease.messages]


def _rows(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT message_id, owner FROM messages ORDER BY id").fetchall()


@pytest.fixture
def two_spools(tmp_path: Path) -> Iterator[tuple[Path, SqliteSpool, SqliteSpool]]:
    """A spool file and two processes' spools on it, closed after the test."""
    path = tmp_path / "s.db"
    first = _spool(path)
    second = _spool(path)
    try:
        yield path, first, second
    finally:
        first.close()
        second.close()


# An operation on the spool: put n messages (kept or not), lease (ack or release it).
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 12), st.booleans()),
        st.tuples(st.just("lease"), st.integers(1, 9), st.sampled_from(["ack", "release"])),
    ),
    max_size=25,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=OPS, keep_bytes=st.sampled_from([0, 60, 150, 1 << 20]), defer=st.booleans())
def test_the_queue_is_first_in_first_out_whatever_is_kept_or_deferred(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    ops: list[tuple[Any, ...]],
    keep_bytes: int,
    defer: bool,
) -> None:
    # The model: the acceptance indexes neither acknowledged nor leased, in order. A lease
    # takes the first of them; a release puts them back at their place.
    monkeypatch.setattr(_sqlite, "KEEP_BYTES", keep_bytes)
    path = tmp_path_factory.mktemp("spool") / "s.db"
    spool = _spool(path, defer_acks=lambda: defer)
    pending: list[int] = []
    acked: list[int] = []
    accepted = 0
    try:
        for op in [*ops, ("lease", 10_000, "ack")]:
            if op[0] == "put":
                batch = [_message(accepted + i) for i in range(op[1])]
                spool.put_many(batch, keep=op[2])
                pending += range(accepted, accepted + op[1])
                accepted += op[1]
                # An estimate (it may count a drained head as one more), never short.
                assert spool.backlog("acme") >= len(pending)
                continue
            lease = spool.lease("acme", op[1], 1 << 20)
            if not pending:
                assert lease is None
                continue
            assert lease is not None
            got = [int(m.message_id[1:]) for m in lease.messages]
            assert got == pending[: len(got)]
            assert len(got) == min(op[1], len(pending))
            del pending[: len(got)]
            if op[2] == "ack":
                spool.ack(lease, lease.messages)
                acked += got
            else:
                spool.release(lease, lease.messages)
                pending = sorted(pending + got)
            stats = spool.stats()
            assert (stats.messages, stats.leased) == (len(pending), 0)
        assert sorted(acked) == list(range(accepted))  # each once, none lost
        assert spool.empty()
    finally:
        spool.close()
    assert _rows(path) == []  # every acknowledgement written by close at the latest


def test_kept_rows_are_leased_to_their_process_in_the_file_and_freed_at_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    spool = _spool(path)
    spool.put_many([_message(i) for i in range(3)], keep=True)
    assert _rows(path) == [(f"m{i:05d}", spool.owner) for i in range(3)]
    # Queued, not leased, as this process counts them.
    assert (spool.stats().messages, spool.stats().leased) == (3, 0)
    assert spool.tenants() == ["acme"]
    spool.close()
    assert _rows(path) == [(f"m{i:05d}", None) for i in range(3)]
    again = _spool(path)
    try:
        again.maintain(force=True)
        lease = _leased(again, 10)
        assert _ids(lease) == [f"m{i:05d}" for i in range(3)]
    finally:
        again.close()


def test_rows_beyond_the_keep_budget_go_into_the_file_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "KEEP_BYTES", 50)
    path = tmp_path / "s.db"
    spool = _spool(path)
    try:
        spool.put_many([_message(i) for i in range(4)], keep=True)  # 20 bytes each
        owners = [owner for _, owner in _rows(path)]
        assert owners == [spool.owner, spool.owner, None, None]
        lease = _leased(spool, 10)
        assert _ids(lease) == [f"m{i:05d}" for i in range(4)]
        assert {owner for _, owner in _rows(path)} == {spool.owner}  # all leased now
    finally:
        spool.close()


def test_deferred_acknowledgements_count_at_once_and_go_with_the_next_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    later = [True]
    spool = _spool(path, defer_acks=lambda: later[0])
    try:
        spool.put_many([_message(i) for i in range(3)], keep=True)
        lease = _leased(spool, 2)
        spool.ack(lease, lease.messages)
        assert len(_rows(path)) == 3  # not written yet...
        assert spool.stats().messages == 1  # ...but gone for this process
        assert not spool.empty()
        spool.put_many([_message(3)], keep=True)  # the next write takes them along
        assert [mid for mid, _ in _rows(path)] == ["m00002", "m00003"]
        lease = _leased(spool, 1)
        spool.ack(lease, lease.messages)
        assert len(_rows(path)) == 2
        spool.maintain(force=True)  # upkeep, within a second, writes them too
        assert [mid for mid, _ in _rows(path)] == ["m00003"]
        later[0] = False  # nothing coming: written at once
        lease = _leased(spool, 1)
        spool.ack(lease, lease.messages)
        assert _rows(path) == []
        assert spool.empty()
    finally:
        spool.close()


def test_a_spool_at_its_cap_writes_deferred_acknowledgements_to_make_room(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    spool = _spool(path, max_bytes=1 << 18, defer_acks=lambda: True)
    try:
        big = [_message(i, size=2000) for i in range(100)]
        spool.put_many(big, keep=True)
        assert not spool.has_room(1 << 15)
        lease = _leased(spool, 100)
        assert len(lease.messages) == 100
        spool.ack(lease, lease.messages)
        assert len(_rows(path)) == 100  # deferred
        assert spool.has_room(1 << 15)  # written to make the room
        assert _rows(path) == []
    finally:
        spool.close()


# The three ways a record reaches the file: mapped from the fields still in memory, read
# back from its journal frame, or moved in as the journal record it is (decoded at lease).
INGEST_PATHS = ["fields", "frames", "records"]


@pytest.mark.parametrize("path_taken", INGEST_PATHS)
def test_a_record_that_cannot_become_its_message_is_a_dead_letter_and_costs_no_other(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch, path_taken: str
) -> None:
    """Whichever way the record goes, the same dead letter, report and counts: those of
    the plain path (the journal record decoded, as at lease or after a restart)."""
    real = _journal.encode_fields
    if path_taken == "frames":  # no fields held: every record read back from its frame
        monkeypatch.setattr(_journal, "FIELDS_HELD", 0)
    elif path_taken == "records":  # nothing kept: records go in as they are
        monkeypatch.setattr(SqliteSpool, "keeping", lambda self: False)

    def encode(fields: dict[str, Any], *args: Any) -> EncodedMessage:
        if fields.get("event_id") == "ev-bad":
            raise TypeError("a value no check foresaw")
        return real(fields, *args)

    monkeypatch.setattr(_journal, "encode_fields", encode)
    path = tmp_path / "spool.db"
    failures: list[DeliveryFailure] = []
    em = emitter(server, spool=str(path), on_failure=failures.append)
    good = {"type": "opened", "email": "ada@example.com", "tenant": "acme"}
    assert em.emit(good | {"event_id": "ev-1"})
    assert em.emit(good | {"event_id": "ev-bad"})
    assert em.emit(good | {"event_id": "ev-2"})
    assert em.flush(10)
    stats = em.stats()
    assert em.close()
    assert len(server.message_ids()) == 2
    assert stats.dropped == {"unreadable_record": 1}
    assert [f.reason for f in failures] == ["unreadable_record"]
    with sqlite3.connect(path) as db:
        dead = db.execute("SELECT tenant, body, reason FROM dead_letters").fetchall()
    assert len(dead) == 1
    tenant, body, reason = dead[0]
    assert tenant == "acme"
    assert reason == "record: unreadable journal record"
    assert [f.detail for f in failures] == [reason]
    assert orjson.loads(body)[2]["event_id"] == "ev-bad"  # the record, kept


def test_records_held_as_frames_only_make_the_same_messages_as_records_held_with_fields(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst beyond FIELDS_HELD waits as frames only: the encoder reads them back, and
    # the messages, the refusals and the dead letters are the same.
    records = [
        {"type": "opened", "email": f"u{i}@example.com", "tenant": "acme", "event_id": f"e{i}"}
        for i in range(5)
    ]
    records[2] = records[2] | {"properties": {"blob": "x" * 40_000}}  # over 32 KB
    sent: dict[int, list[dict[str, Any]]] = {}
    dead: dict[int, list[tuple[Any, ...]]] = {}
    for held in (_journal.FIELDS_HELD, 0):
        monkeypatch.setattr(_journal, "FIELDS_HELD", held)
        server.clear()
        path = tmp_path / f"spool-{held}.db"
        failures: list[DeliveryFailure] = []
        em = emitter(server, spool=str(path), on_failure=failures.append)
        for r in records:
            assert em.emit(r)
        assert em.flush(10)
        assert em.close()
        assert [f.reason for f in failures] == ["too_large"]
        sent[held] = sorted(server.accepted, key=lambda m: m["messageId"])
        with sqlite3.connect(path) as db:
            dead[held] = db.execute(
                "SELECT tenant, kind, body, reason FROM dead_letters"
            ).fetchall()
    assert len(sent[0]) == 4
    assert [m | {"sentAt": None, "timestamp": None} for m in sent[0]] == [
        m | {"sentAt": None, "timestamp": None} for m in sent[_journal.FIELDS_HELD]
    ]
    assert dead[0] == dead[_journal.FIELDS_HELD]
    assert len(dead[0]) == 1


def test_a_release_frees_what_is_kept_and_stops_keeping_until_an_acknowledgement(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    spool = _spool(path)
    try:
        spool.put_many([_message(i) for i in range(4)], keep=True)
        lease = _leased(spool, 1)
        spool.release(lease, lease.messages)  # a retry: Segment is not taking them now
        assert not spool.keeping()
        assert [owner for _, owner in _rows(path)] == [None] * 4  # back in the file's queue
        spool.put_many([_message(4)], keep=True)
        assert _rows(path)[-1] == ("m00004", None)  # not kept
        lease = _leased(spool, 10)
        assert _ids(lease) == [f"m{i:05d}" for i in range(5)]
        spool.ack(lease, lease.messages)
        assert spool.keeping()
        spool.put_many([_message(5)], keep=True)
        assert _rows(path)[-1] == ("m00005", spool.owner)  # kept again
    finally:
        spool.close()


def test_a_row_id_of_a_lease_held_in_memory_is_never_given_to_a_kept_row(
    two_spools: tuple[Path, SqliteSpool, SqliteSpool],
) -> None:
    # A lease held in memory only (the file could not be written) refers to its rows by
    # id and acceptance time; another process may delete such a row, and SQLite gives its
    # id to the next row. A kept row with that id, released, must not be taken for the
    # row leased in memory (whose late acknowledgement would then delete it).
    path, a, b = two_spools
    a._db.execute("PRAGMA busy_timeout = 50")
    a.put_many([_message(0)])
    with sqlite3.connect(path, isolation_level=None) as locker:
        locker.execute("BEGIN IMMEDIATE")
        old = a.lease("acme", 10, 1 << 20)  # cannot be written: held in memory
        locker.execute("ROLLBACK")
    assert old is not None
    a.note_error("globex", "a write that succeeds", 0.0, None)  # writable again
    lease = _leased(b, 10)  # the other process sends row 1, deletes it
    b.ack(lease, lease.messages)
    a.put_many([_message(1)], keep=True)  # may take id 1 again
    new = a.lease("acme", 10, 1 << 20)  # (hidden while id 1 is held in memory)
    if new is not None:
        a.release(new, new.messages)  # a retry
    a.ack(old, old.messages)  # late: it must not delete m00001
    assert [mid for mid, _ in _rows(path)] == ["m00001"]
    again = _leased(a, 10)
    assert [m.message_id for m in again.messages] == ["m00001"]


def test_keeping_stops_at_the_budget_and_starts_again_once_half_of_it_is_leased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "KEEP_BYTES", 100)
    path = tmp_path / "s.db"
    spool = _spool(path)
    try:
        spool.put_many([_message(i) for i in range(6)], keep=True)  # 20 bytes each
        assert [owner is not None for _, owner in _rows(path)] == [True] * 5 + [False]
        assert not spool.keeping()  # a backlog builds up: the encoder moves records in
        spool.put_many([_message(6)], keep=True)
        assert _rows(path)[-1] == ("m00006", None)
        lease = _leased(spool, 2)  # 40 bytes leased: 60 still kept
        spool.ack(lease, lease.messages)
        assert not spool.keeping()
        lease = _leased(spool, 1)  # 40 bytes kept: under half
        spool.ack(lease, lease.messages)
        assert spool.keeping()
        rest = _leased(spool, 10)
        assert [m.message_id for m in rest.messages] == [f"m{i:05d}" for i in range(3, 7)]
    finally:
        spool.close()


def test_a_paused_or_retrying_tenants_rows_are_not_kept_where_other_processes_cannot_send_them(
    two_spools: tuple[Path, SqliteSpool, SqliteSpool],
) -> None:
    path, spool, other = two_spools
    spool.put_many([_message(0), _message(1, "globex")], keep=True)
    spool.mark_paused("acme", "write key refused (401)")  # freed at once
    other.maintain(force=True)
    lease = _leased(other, 10)
    assert _ids(lease) == ["m00000"]
    other.ack(lease, lease.messages)
    spool.put_many([_message(2), _message(3, "globex")], keep=True)
    owners = dict(_rows(path))
    assert owners == {"m00001": spool.owner, "m00002": None, "m00003": spool.owner}
    spool.mark_paused("acme", None)  # resumed: kept again
    spool.put_many([_message(4)], keep=True)
    assert dict(_rows(path))["m00004"] == spool.owner
    # A retry of globex frees globex's kept rows, and keeps none until an ack.
    lease = _leased(spool, 1, "globex")
    spool.release(lease, lease.messages)
    assert {mid: owner for mid, owner in _rows(path) if mid in ("m00001", "m00003")} == {
        "m00001": None,
        "m00003": None,
    }


def _acked_deferred(spool: SqliteSpool, n: int) -> None:
    """Put ``n`` messages (kept), lease them and acknowledge them: a deferred deletion."""
    spool.put_many([_message(i) for i in range(n)], keep=True)
    lease = _leased(spool, n)
    spool.ack(lease, lease.messages)


@contextlib.contextmanager
def _refusing(path: Path, statement: str) -> Iterator[None]:
    """Every ``statement`` (``INSERT``, ``DELETE``) on ``messages`` fails meanwhile, as a
    damaged file's would: an error that is not operational."""
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TRIGGER refuse BEFORE {statement} ON messages "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    try:
        yield
    finally:
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER refuse")


def test_a_write_of_deferred_acknowledgements_that_fails_for_good_does_not_stop_intake(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    spool = _spool(path, defer_acks=lambda: True)
    try:
        _acked_deferred(spool, 1)
        with _refusing(path, "DELETE"):
            spool.put_many([_message(1)], keep=True)  # goes in all the same
            assert [mid for mid, _ in _rows(path)] == ["m00000", "m00001"]
            assert spool.stats().messages == 1  # m00000 is gone for this process
    finally:
        spool.close()


def test_an_acknowledgement_the_file_refuses_for_good_is_kept_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Settling never raises: an outcome the file refuses (a damaged page, a constraint),
    like one it cannot take now (a full disk), is kept in memory, logged, and written by
    the first write that succeeds. Raised, it skipped the delivered count and stopped the
    sender's turn after Segment had the batch."""
    path = tmp_path / "s.db"
    spool = _spool(path)
    try:
        spool.put_many([_message(0), _message(1)])
        lease = _leased(spool)
        with _refusing(path, "DELETE"):
            spool.ack(lease, lease.messages)  # no raise
            assert spool.empty()  # gone for this process
            assert spool.stats().messages == 0
        assert [r.levelno for r in caplog.records if "refused" in r.getMessage()] == [logging.ERROR]
        assert [mid for mid, _ in _rows(path)] == ["m00000", "m00001"]
        spool.put_many([_message(2)])  # the next write carries the deletion
        assert [mid for mid, _ in _rows(path)] == ["m00002"]
    finally:
        spool.close()


def test_leases_go_on_while_the_file_refuses_the_outcomes_before_them(tmp_path: Path) -> None:
    """An outcome the file refuses for good does not stop delivery: a lease (which writes
    the outcomes first) is then held in memory, as when the disk is full, and a release
    and an acknowledgement of it do not raise either."""
    path = tmp_path / "s.db"
    spool = _spool(path, defer_acks=lambda: True)
    try:
        _acked_deferred(spool, 1)
        with _refusing(path, "DELETE"):
            spool.put_many([_message(1), _message(2)])
            lease = _leased(spool, 1)
            assert _ids(lease) == ["m00001"]
            spool.release(lease, lease.messages)
            lease = _leased(spool)
            assert _ids(lease) == ["m00001", "m00002"]
            spool.ack(lease, lease.messages)
            assert spool.empty()
        assert spool.maintain() == []  # upkeep writes what was kept
        assert _rows(path) == []
    finally:
        spool.close()


def test_upkeep_goes_on_while_the_file_refuses_the_outcomes_it_writes_first(
    two_spools: tuple[Path, SqliteSpool, SqliteSpool],
) -> None:
    """Upkeep writes the outcomes kept first; one the file refuses for good must not cost
    the round: another process's messages are still noticed (and dead ones recovered)."""
    path, first, second = two_spools
    first.put_many([_message(0)])
    lease = _leased(first)
    with _refusing(path, "DELETE"):
        first.ack(lease, lease.messages)
        second.put_many([_message(1)])
        assert first.maintain(force=True) == ["acme"]
        assert _ids(_leased(first)) == ["m00001"]


def test_delivery_is_counted_and_flushed_while_the_file_refuses_its_deletions(
    tmp_path: Path, server: LocalSegment, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: Segment has the events, so they are delivered (counted, flushed), and
    the rows go at the first write the file takes (here at close)."""
    path = tmp_path / "spool.db"
    em = emitter(server, spool=str(path))
    try:
        with _refusing(path, "DELETE"):
            for i in range(3):
                assert em.emit(
                    {
                        "type": "opened",
                        "email": "ada@example.com",
                        "tenant": "acme",
                        "event_id": f"ev-{i}",
                    }
                )
            assert em.flush(10)
            assert em.stats().delivered == 3
        assert not [r for r in caplog.records if "delivery waits" in r.getMessage()]
    finally:
        assert em.close()
    assert len(server.message_ids()) == 3
    assert _rows(path) == []


def test_deferred_acknowledgements_go_in_the_same_commit_as_the_next_insert(
    tmp_path: Path,
) -> None:
    """One commit (one fsync with ``fsync=True``) per encoder step, not two."""
    path = tmp_path / "s.db"
    spool = _spool(path, defer_acks=lambda: True)
    statements: list[str] = []
    try:
        _acked_deferred(spool, 2)
        spool._db.set_trace_callback(statements.append)
        spool.put_many([_message(2)], keep=True)
        spool._db.set_trace_callback(None)
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        assert [mid for mid, _ in _rows(path)] == ["m00002"]
        assert _ids(_leased(spool, 10)) == ["m00002"]
    finally:
        spool.close()


def test_an_insert_that_fails_still_lets_the_deferred_acknowledgements_be_written(
    tmp_path: Path,
) -> None:
    """They were written first, by themselves, before: they still are when the insert
    beside them fails (and the put raises, for the encoder to try again)."""
    path = tmp_path / "s.db"
    spool = _spool(path, defer_acks=lambda: True)
    try:
        _acked_deferred(spool, 1)
        with _refusing(path, "INSERT"), pytest.raises(SpoolError):
            spool.put_many([_message(1)], keep=True)
        assert _rows(path) == []  # m00000 deleted all the same
        spool.put_many([_message(1)], keep=True)  # the encoder's next try
        assert _ids(_leased(spool, 10)) == ["m00001"]
    finally:
        spool.close()


def test_a_write_lock_held_by_another_process_is_waited_for_once_not_twice(
    tmp_path: Path,
) -> None:
    """The joined write fails to begin: that is the settled ones' write failing (kept,
    reported, the busy timeout shortened), and the insert alone is tried once more."""
    path = tmp_path / "s.db"
    spool = _spool(path, defer_acks=lambda: True)
    statements: list[str] = []
    try:
        _acked_deferred(spool, 1)
        spool._db.execute("PRAGMA busy_timeout = 100")
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        spool._db.set_trace_callback(statements.append)
        with pytest.raises(SpoolError, match="locked"):
            spool.put_many([_message(1)], keep=True)
        spool._db.set_trace_callback(None)
        locker.execute("ROLLBACK")
        locker.close()
        assert statements.count("BEGIN IMMEDIATE") == 2  # the joined write, the insert
        spool.put_many([_message(1)], keep=True)  # the encoder's next try: all written
        assert [mid for mid, _ in _rows(path)] == ["m00001"]
    finally:
        spool.close()


def test_a_late_acknowledgement_of_a_paused_tenant_does_not_keep_its_rows_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    spool = _spool(path)
    try:
        spool.put_many([_message(i) for i in range(4)], keep=True)
        first = spool.lease("acme", 2, 1 << 20)
        second = spool.lease("acme", 2, 1 << 20)
        assert first is not None
        assert second is not None
        spool.release(second, second.messages)  # 401: released, and the tenant paused
        spool.mark_paused("acme", "write key refused (401)")
        spool.ack(first, first.messages)  # sent before the key was revoked: 200
        spool.put_many([_message(4)], keep=True)
        assert _rows(path)[-1] == ("m00004", None)  # free: another process may send it
    finally:
        spool.close()


def test_a_paused_tenants_backlog_goes_in_as_records_while_other_tenants_are_sent(
    tmp_path: Path, server: LocalSegment
) -> None:
    paused = threading.Event()
    server.revoke_write_key("key-acme")
    path = tmp_path / "spool.db"
    em = emitter(server, spool=str(path), on_pause=lambda tenant, reason: paused.set())
    try:
        good = {"type": "opened", "email": "ada@example.com"}
        assert em.emit(good | {"tenant": "acme", "event_id": "first"})
        assert paused.wait(10)
        assert em.emit(good | {"tenant": "globex", "event_id": "g"})
        # Acknowledged: this process keeps rows (and maps records) again, but acme's.
        assert wait_until(lambda: em.stats().delivered == 1)
        for i in range(50):
            assert em.emit(good | {"tenant": "acme", "event_id": f"a{i}"})
            assert em.emit(good | {"tenant": "globex", "event_id": f"g{i}"})
        assert server.wait_for(51)  # globex's, sent meanwhile
        assert em.flush(0.5) is False  # acme's stay
    finally:
        em.close(0)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT message_id FROM messages WHERE tenant = 'acme'").fetchall()
    assert len(rows) == 51
    # The first may have been mapped before the pause; the rest are journal records
    # (message id empty), about half the room of their messages, mapped once sent.
    assert sum(1 for (mid,) in rows if mid) <= 1
