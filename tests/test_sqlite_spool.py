"""The durable spool file: safety of the file, queue semantics, recovery, Emitter use.

Real SQLite files in tmp_path, real HTTP to LocalSegment on loopback, real processes where
a crash is the point.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import http.client
import logging
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from _delivery import record as delivery_record
from _forks import wait_child
from freezegun import freeze_time

from selligent_segment import (
    BatchPolicy,
    ConfigurationError,
    DeliveryFailure,
    Emitter,
    EncodedMessage,
    EventNaming,
    InvalidEvent,
    RetryPolicy,
    SpoolFull,
    UnknownTenant,
    encode,
    message_id,
)
from selligent_segment._errors import SpoolError
from selligent_segment._mapping import encode_fields
from selligent_segment._record import normalize, revive
from selligent_segment.observability import health
from selligent_segment.spool import _journal
from selligent_segment.spool._schema import _ADDITIONS, APPLICATION_ID, SCHEMA_VERSION
from selligent_segment.spool._sqlite import SqliteSpool
from selligent_segment.testing import LocalSegment

FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=1_000_000)
EMITTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
KEYS = {"acme": "wk_SECRET_acme_7f3a9c", "globex": "wk_SECRET_globex_1b2d4e"}


def record(i: int, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    """:func:`_delivery.record` as an Email Opened record."""
    return delivery_record(i, tenant, **{"type": "opened", **extra})


def decode(payload: bytes) -> EncodedMessage:
    """What the Emitter does with a journal record: (tenant, emit time, fields)."""
    try:
        tenant, now, raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidEvent("record", "not a journal record") from None
    return encode_fields(revive(raw), tenant, EventNaming(), now)


def stored(path: Path) -> list[EncodedMessage]:
    """The messages queued in the file, in order: rows holding a journal record (the
    form the encoder stores) are encoded as a lease would."""
    rows = query(path, "SELECT tenant, message_id, kind, body FROM messages ORDER BY id")
    return [
        EncodedMessage(tenant, mid, kind, body) if mid else decode(body)
        for tenant, mid, kind, body in rows
    ]


def messages(n: int, tenant: str = "acme", start: int = 0) -> list[EncodedMessage]:
    return [encode(record(i, tenant), now=EMITTED) for i in range(start, start + n)]


def open_spool(path: Path, **options: Any) -> SqliteSpool:
    options.setdefault("max_bytes", 16 * 1024 * 1024)
    return SqliteSpool(path, decoder=decode, **options)


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return db.execute(sql, args).fetchall()


def emitter(server: LocalSegment, spool: Path | str, **options: Any) -> Emitter:
    options.setdefault("write_keys", KEYS)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("batch", BatchPolicy(linger=0.0))
    return Emitter(endpoint=server.url, spool=spool, **options)


def ids(*records: dict[str, Any]) -> set[str]:
    return {message_id(r) for r in records}


# -- the file ---------------------------------------------------------------------------------


def test_the_spool_file_and_its_journals_are_private(tmp_path: Path, server: LocalSegment) -> None:
    path = tmp_path / "state" / "spool.db"
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        em = emitter(server, path)
        em.emit(record(1))
        assert em.flush(10)
        files = [path, path.with_name("spool.db-wal"), path.with_name("spool.db-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}
        journals = path.with_name("spool.db.journals")
        inside = {p.name: stat.S_IMODE(p.stat().st_mode) for p in journals.iterdir()}
        em.close()
    finally:
        os.umask(old)
    assert modes["spool.db"] == 0o600
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(journals.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert inside, "no journal or lock file"
    assert set(inside.values()) == {0o600}, inside


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_no_write_key_is_ever_written_to_the_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    needles = [k.encode() for k in KEYS.values()]
    needles += [base64.b64encode(f"{k}:".encode()) for k in KEYS.values()]

    def refuse(item: Any) -> str | None:
        return "poison" if item.get("anonymousId") == "user3@example.com" else None

    paused: list[str] = []
    # acme's key is refused (paused, events kept), one globex event is refused with a 400
    # (a dead letter), the rest is delivered or queued.
    with LocalSegment(write_keys=[KEYS["globex"]], strict=True, refuse=refuse) as server:
        em = emitter(server, path, on_pause=lambda t, r: paused.append(t))
        for i in range(5):
            em.emit(record(i, "acme"))
            em.emit(record(i, "globex"))
        em.emit_many([record(i, "globex") for i in range(10, 20)])
        assert not em.flush(1.0)
        assert paused == ["acme"]
        assert len(server.accepted) == 14
        live = _all_bytes(tmp_path)
        em.close(0.1)
    assert query(path, "SELECT count(*) FROM dead_letters") == [(1,)]
    assert query(path, "SELECT count(*) FROM messages") == [(5,)]
    assert b"user3@example.com" in live  # the files do hold the events...
    for data in (live, _all_bytes(tmp_path)):
        for needle in needles:
            assert needle not in data  # ...never a key


def _pending_wal(path: Path, sql: str) -> None:
    """An SQLite file in WAL mode whose last writes are still in its -wal (the writer was
    killed): closing a read-write connection to it would checkpoint them into the file."""
    script = textwrap.dedent(
        f"""
        import os, sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript({sql!r})
        os.kill(os.getpid(), 9)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)
    assert path.with_name(path.name + "-wal").stat().st_size > 0


def _make_foreign(kind: str, path: Path) -> None:
    if kind == "text":
        path.write_text("name,email\nAda,ada@example.com\n")
    elif kind == "other_app":
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE contacts (email TEXT)")
            db.execute("INSERT INTO contacts VALUES ('ada@example.com')")
            db.commit()
    elif kind == "other_app_wal":
        _pending_wal(path, "CREATE TABLE contacts (email TEXT); INSERT INTO contacts VALUES (1);")
    elif kind == "other_application_id":
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA application_id = 1234")
            db.execute("CREATE TABLE t (x)")
            db.commit()
    elif kind == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    elif kind == "newer":
        _pending_wal(
            path,
            f"PRAGMA application_id = {APPLICATION_ID};"
            f"PRAGMA user_version = {SCHEMA_VERSION + 1};"
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, future TEXT);"
            "INSERT INTO messages (future) VALUES ('x');",
        )
    else:  # pragma: no cover
        raise AssertionError(kind)


def _snapshot(directory: Path) -> dict[str, str]:
    # The -shm file is SQLite's shared-memory index, rebuilt by any reader: not content.
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
        for p in directory.iterdir()
        if not p.name.endswith("-shm")
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "not SQLite"),
        ("other_app", "another application"),
        ("other_app_wal", "another application"),
        ("other_application_id", "another application"),
        ("corrupt", "corrupt"),
        ("newer", "newer than this version"),
    ],
)
def test_a_foreign_corrupt_or_newer_file_is_refused_and_left_untouched(
    tmp_path: Path, server: LocalSegment, kind: str, message: str
) -> None:
    path = tmp_path / "data.db"
    _make_foreign(kind, path)
    before = _snapshot(tmp_path)
    with pytest.raises(SpoolError, match=message) as info:
        emitter(server, path)
    assert str(path) in str(info.value)
    with pytest.raises(SpoolError, match=message):
        open_spool(path)
    assert _snapshot(tmp_path) == before


def test_an_empty_file_becomes_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.touch()
    spool = open_spool(path)
    spool.put_many(messages(1))
    spool.close()
    assert query(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert query(path, "SELECT count(*) FROM messages") == [(1,)]


def test_sqlite_urls_name_the_file(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server.outage(503)
    relative = emitter(server, "sqlite:///rel/spool.db")
    relative.emit(record(1))
    relative.close(0.1)
    absolute_path = tmp_path / "abs" / "spool.db"
    absolute = emitter(server, f"sqlite:///{absolute_path}")  # sqlite:////tmp/...
    absolute.emit(record(2))
    absolute.close(0.1)
    assert [m.message_id for m in stored(tmp_path / "rel" / "spool.db")] == [message_id(record(1))]
    assert [m.message_id for m in stored(absolute_path)] == [message_id(record(2))]
    for bad in ["sqlite://host/spool.db", "sqlite:///", "sqlite:relative.db", ""]:
        with pytest.raises(ConfigurationError, match="spool"):
            emitter(server, bad)


# -- the queue --------------------------------------------------------------------------------


def _mids(lease: Any) -> list[str]:
    return [m.message_id for m in lease.messages]


def test_leases_take_the_head_of_a_tenants_queue_in_order_never_twice(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    acme, globex = messages(10, "acme"), messages(3, "globex")
    spool.put_many(acme[:5] + globex + acme[5:])
    assert sorted(spool.tenants()) == ["acme", "globex"]
    assert spool.backlog("acme") == 10
    first = spool.lease("acme", 4, 1 << 20)
    second = spool.lease("acme", 4, 1 << 20)
    assert first is not None
    assert second is not None
    assert _mids(first) == [m.message_id for m in acme[:4]]
    assert _mids(second) == [m.message_id for m in acme[4:8]]
    assert [m.body for m in first.messages] == [m.body for m in acme[:4]]
    other = spool.lease("globex", 100, 1 << 20)
    assert other is not None
    assert _mids(other) == [m.message_id for m in globex]
    assert spool.lease("globex", 100, 1 << 20) is None
    stats = spool.stats()
    assert (stats.messages, stats.leased) == (13, 11)
    assert stats.per_tenant == {"acme": 10, "globex": 3}

    # Released messages go back to the head of the queue, in their order.
    spool.release(first, first.messages)
    again = spool.lease("acme", 6, 1 << 20)
    assert again is not None
    assert _mids(again) == [m.message_id for m in acme[:4] + acme[8:10]]
    spool.ack(second, second.messages)
    spool.ack(other, other.messages)
    spool.ack(again, again.messages[:2])
    spool.release(again, again.messages[2:])
    rest = spool.lease("acme", 100, 1 << 20)
    assert rest is not None
    assert _mids(rest) == [m.message_id for m in acme[2:4] + acme[8:10]]
    assert not spool.empty()  # leased messages are still the spool's
    spool.ack(rest, rest.messages)
    assert spool.empty()
    assert spool.lease("acme", 100, 1 << 20) is None
    spool.close()


def test_a_lease_respects_max_bytes_but_always_takes_one(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    batch = messages(5)
    spool.put_many(batch)
    size = len(batch[0].body) + 1
    two = spool.lease("acme", 100, 2 * size + size // 2)
    assert two is not None
    assert len(two.messages) == 2
    one = spool.lease("acme", 100, 1)
    assert one is not None
    assert len(one.messages) == 1
    assert _mids(one) == [batch[2].message_id]
    spool.close()


def test_a_message_is_settled_once(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    spool.put_many(messages(3))
    lease = spool.lease("acme", 3, 1 << 20)
    assert lease is not None
    spool.ack(lease, lease.messages[:1])
    with pytest.raises(ValueError, match="settled twice"):
        spool.release(lease, lease.messages[:1])
    spool.reject(lease, lease.messages[1:], "no", 400)
    with pytest.raises(ValueError, match="not live"):
        spool.ack(lease, lease.messages[1:])
    spool.close()


def test_rejected_messages_become_dead_letters_with_reason_and_status(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(4)
    spool.put_many(batch)
    lease = spool.lease("acme", 4, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages[1:3], "batch item 0: poison", 400)
    spool.ack(lease, [lease.messages[0], lease.messages[3]])
    spool.close()
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]
    rows = query(
        path, "SELECT tenant, message_id, kind, body, reason, status FROM dead_letters ORDER BY id"
    )
    assert rows == [
        ("acme", m.message_id, "opened", m.body, "batch item 0: poison", 400) for m in batch[1:3]
    ]


def test_a_reason_no_encoder_can_write_is_stored_replaced_and_blocks_nothing(
    tmp_path: Path,
) -> None:
    # An outside text (an endpoint's error message) with a lone surrogate and a NUL: the
    # sqlite3 module cannot encode the surrogate, and a settlement it cannot write was
    # kept and replayed before every later write, so nothing was ever leased again.
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(3)
    spool.put_many(batch)
    lease = spool.lease("acme", 1, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages, "rejected: bad \ud800 and \x00 here", 400)
    spool.note_error("acme", "HTTP 400: \udfff", 1.0, 400)
    again = spool.lease("acme", 2, 1 << 20)
    assert again is not None
    assert again.messages == tuple(batch[1:])
    spool.ack(again, again.messages)
    spool.close()
    assert query(path, "SELECT reason FROM dead_letters") == [
        ("rejected: bad \ufffd and \ufffd here",)
    ]
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


def test_a_large_rejection_keeps_order_and_acceptance_times(tmp_path: Path) -> None:
    # Over one statement's worth (1,024) of messages, each with its own row's accepted_at.
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(2100)
    with freeze_time("2026-11-20 10:00:00"):
        spool.put_many(batch[:1000])
    with freeze_time("2026-11-20 10:00:05"):
        spool.put_many(batch[1000:])
    lease = spool.lease("acme", 2500, 1 << 30)
    assert lease is not None
    assert len(lease.messages) == 2100
    with freeze_time("2026-11-20 10:01:00"):
        spool.reject(lease, lease.messages, "exhausted", None)
    spool.close()
    rows = query(
        path, "SELECT message_id, body, accepted_at, failed_at FROM dead_letters ORDER BY id"
    )
    assert [(r[0], r[1]) for r in rows] == [(m.message_id, m.body) for m in batch]
    base = datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp()
    assert {r[2] for r in rows[:1000]} == {base}
    assert {r[2] for r in rows[1000:]} == {base + 5}
    assert {r[3] for r in rows} == {base + 60}
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


def _journal_record(rec: dict[str, Any], now: float | None = 1.7e9) -> bytes:
    """A record as Emitter.emit journals it: (tenant, emit time, normalized fields)."""
    fields = normalize(rec)
    return orjson.dumps((rec.get("tenant") or "acme", now, fields))


def test_journal_records_are_stored_as_they_are_and_encoded_when_leased(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    recs = [
        record(1),
        record(2, user_id=42, timestamp="2026-11-20T12:01:00.123456+02:00"),
        # No event_id: the id is derived from the content, properties and timestamp included.
        {**record(3, properties={"plan": {"tier": "gold", "seats": [1, 2.5]}}), "event_id": None},
        record(4, type="link_clicked", link_url="https://example.com/ü"),
    ]
    payloads = [_journal_record(r) for r in recs]
    spool.put_many(records=[("acme", r["type"], p) for r, p in zip(recs, payloads, strict=True)])
    # In the file: the journal record, byte for byte, not yet a message.
    assert query(path, "SELECT message_id, kind, body FROM messages ORDER BY id") == [
        ("", r["type"], p) for r, p in zip(recs, payloads, strict=True)
    ]
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    # The same messages encode() gives from the records at emit time, byte for byte.
    expected = [encode_fields(normalize(r), "acme", EventNaming(), 1.7e9) for r in recs]
    assert [(m.message_id, m.body) for m in lease.messages] == [
        (m.message_id, m.body) for m in expected
    ]
    assert _mids(lease)[3] == message_id({**recs[3], "tenant": "acme"})
    # A rejected one is kept as the message that was refused, not as the record.
    spool.reject(lease, lease.messages[1:2], "batch item 0: poison", 400)
    spool.ack(lease, lease.messages[:1] + lease.messages[2:])
    spool.close()
    assert query(path, "SELECT message_id, body FROM dead_letters") == [
        (expected[1].message_id, expected[1].body)
    ]


def test_a_record_that_cannot_become_a_message_is_a_dead_letter_when_leased(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    good = [_journal_record(record(i)) for i in range(2)]
    spool.put_many(
        records=[
            ("acme", "opened", good[0]),
            ("acme", "opened", b'["acme", null, {"type": "nonsense"}]'),
            ("acme", "opened", b"not json"),
            ("acme", "opened", good[1]),
        ]
    )
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert _mids(lease) == [message_id(record(i)) for i in range(2)]
    dead = query(path, "SELECT tenant, message_id, body, reason, status FROM dead_letters")
    assert [(d[0], d[1], d[2], d[4]) for d in dead] == [
        ("acme", "", b'["acme", null, {"type": "nonsense"}]', None),
        ("acme", "", b"not json", None),
    ]
    assert all("journal" in d[3] for d in dead)
    assert "kept as a dead letter" in caplog.text
    spool.ack(lease, lease.messages)
    assert spool.empty()
    spool.close()


def test_a_record_buried_at_lease_is_logged_with_the_reason_code_of_every_other_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line's ``reason`` is the code ``stats().dropped`` and ``on_failure`` use, as
    when the record is refused on its way in, or buried by a PostgreSQL spool's lease;
    not the first word of the dead letter's text (``record``)."""
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    try:
        spool.put_many(records=[("acme", "opened", b"not json")])
        assert spool.lease("acme", 10, 1 << 20) is None
    finally:
        spool.close()
    lines = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert [(r.levelno, getattr(r, "reason", None)) for r in lines] == [
        (logging.ERROR, "unreadable_record")
    ]


def test_a_lease_reads_bodies_byte_for_byte_whatever_their_bytes(tmp_path: Path) -> None:
    # A lease reads its rows as one aggregate row (one SQLite step, see _head): the
    # bodies are cut apart again by their lengths, NUL bytes and invalid UTF-8 included.
    spool = open_spool(tmp_path / "spool.db")
    bodies = [b"\xff\x00\xfe", 'ü"'.encode(), bytes(range(256)), b"{}"]
    batch = [EncodedMessage("acme", f"m{i}", "opened", b) for i, b in enumerate(bodies)]
    spool.put_many(batch)
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert [(m.message_id, m.body) for m in lease.messages] == [
        (f"m{i}", b) for i, b in enumerate(bodies)
    ]
    assert spool.lease("acme", 10, 1 << 20) is None
    spool.close()


def test_a_version_1_file_is_migrated_and_its_messages_are_sent(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    batch = messages(3)
    spool.put_many(batch)  # version 1 files hold encoded messages only
    spool.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 1")
    spool = open_spool(path)
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(2,)]
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert [(m.message_id, m.body) for m in lease.messages] == [
        (m.message_id, m.body) for m in batch
    ]
    spool.close()


def test_new_and_older_files_get_the_added_tables_from_one_definition(tmp_path: Path) -> None:
    table_sql = "SELECT name, sql FROM sqlite_schema WHERE name IN ({})".format(
        ", ".join("?" * len(_ADDITIONS))
    )
    new = tmp_path / "new.db"
    open_spool(new).close()  # made now: the added tables are there from the first open
    assert dict(query(new, table_sql, *_ADDITIONS)) == _ADDITIONS
    old = tmp_path / "old.db"
    open_spool(old).close()
    with contextlib.closing(sqlite3.connect(old)) as db:
        for name in _ADDITIONS:
            db.execute(f"DROP TABLE {name}")
        db.execute("PRAGMA user_version = 1")  # a file of the oldest version
    open_spool(old).close()
    assert dict(query(old, table_sql, *_ADDITIONS)) == _ADDITIONS


def _refuse_inserts(path: Path, table: str, text: str) -> None:
    """Make the file refuse rows of ``table`` with ``text``: a trigger, which SQLite
    reports as a non-operational error (an IntegrityError), not a locked or full file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{text}'); END"
        )


def test_a_last_error_the_file_refuses_is_logged_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    try:
        spool.put_many(messages(2))
        _refuse_inserts(path, "last_errors", "no errors here")
        spool.note_error("acme", "HTTP 503", 1.0, 503)
        spool.note_error("acme", "HTTP 503", 2.0, 503)
        lines = [r for r in caplog.records if "no errors here" in r.getMessage()]
        assert [r.levelno for r in lines] == [logging.ERROR]  # once: throttled
        assert not any(r.exc_info for r in lines)
        # The note is dropped, not kept to fail every later write of this process.
        lease = spool.lease("acme", 10, 1 << 20)
        assert lease is not None
        spool.reject(lease, lease.messages[:1], "rejected: HTTP 400", 400)
        spool.ack(lease, lease.messages[1:])
        assert spool.empty()
    finally:
        spool.close()
    assert query(path, "SELECT count(*) FROM dead_letters") == [(1,)]
    assert query(path, "SELECT count(*) FROM last_errors") == [(0,)]


def test_a_rejection_the_file_refuses_is_kept_and_written_later_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    try:
        spool.put_many(messages(2))
        _refuse_inserts(path, "dead_letters", "no dead letters here")
        lease = spool.lease("acme", 10, 1 << 20)
        assert lease is not None
        spool.reject(lease, lease.messages[:1], "rejected: HTTP 400", 400)  # no raise
        assert [r.levelno for r in caplog.records if "no dead letters" in r.getMessage()] == [
            logging.ERROR
        ]
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("DROP TRIGGER refuse")
            db.commit()
        spool.ack(lease, lease.messages[1:])  # the next write carries the kept rejection
        assert spool.empty()
    finally:
        spool.close()
    assert query(path, "SELECT reason, status FROM dead_letters") == [("rejected: HTTP 400", 400)]


def test_max_bytes_below_the_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_spool_bytes"):
        open_spool(tmp_path / "spool.db", max_bytes=1024)


def test_close_frees_this_processs_leases_and_keeps_the_messages(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path)
    spool.put_many(messages(3))
    assert spool.lease("acme", 2, 1 << 20) is not None
    spool.close()
    again = open_spool(path)
    assert again.maintain(force=True) == ["acme"]
    stats = again.stats()
    assert (stats.messages, stats.leased) == (3, 0)
    again.close()


# -- recovery ----------------------------------------------------------------------------------


def _run_and_sigkill(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout


def test_a_dead_processs_lease_is_freed_and_resent_with_the_same_message_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    out = _run_and_sigkill(
        """
        import os, sys
        from pathlib import Path
        from test_sqlite_spool import messages, open_spool
        spool = open_spool(Path(sys.argv[1]))
        spool.put_many(messages(8))
        lease = spool.lease("acme", 5, 1 << 20)
        print(" ".join(m.message_id for m in lease.messages), flush=True)
        os.kill(os.getpid(), 9)  # holding the lease, as if mid-request
        """,
        str(path),
    )
    leased = out.split()
    assert leased == [m.message_id for m in messages(5)]
    spool = open_spool(path)
    assert spool.stats().leased == 5  # until someone notices the owner is dead
    assert spool.lease("acme", 100, 1 << 20) is not None  # the 3 unleased ones
    spool.close()
    spool = open_spool(path)
    spool.maintain()
    assert spool.stats().leased == 0
    lease = spool.lease("acme", 5, 1 << 20)
    assert lease is not None
    assert _mids(lease) == leased
    assert [m.body for m in lease.messages] == [m.body for m in messages(5)]
    spool.close()


def test_a_dead_processs_journal_is_replayed_up_to_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    out = _run_and_sigkill(
        """
        import os, sys, orjson
        from pathlib import Path
        from test_sqlite_spool import messages, open_spool, record
        spool = open_spool(Path(sys.argv[1]))
        spool.put_many(messages(2), [spool.accept([b"ingested"] * 2)])  # already in SQLite
        spool.accept([orjson.dumps(("acme", 1.5e9, record(i))) for i in range(2, 6)])
        spool.accept([b"not json"])
        name, _ = spool.accept([orjson.dumps(("globex", None, record(9, "globex")))])
        print(spool.owner, name, flush=True)
        os.kill(os.getpid(), 9)
        """,
        str(path),
    )
    owner, name = out.split()
    journal = path.with_name("spool.db.journals") / name
    with open(journal, "ab") as f:  # the process died in the middle of a frame
        f.write(b"\x40\x00\x00\x00\x12\x34")
    spool = open_spool(path)
    assert sorted(spool.maintain()) == ["acme", "globex"]
    queued = stored(path)
    expected = [record(i) for i in range(6)] + [record(9, "globex")]
    assert [m.message_id for m in queued] == [message_id(r) for r in expected]
    # The emit time is kept: the replayed message says when it was accepted.
    assert orjson.loads(queued[2].body)["timestamp"].startswith("2017-07-14T02:40:00")
    dead = query(path, "SELECT body, reason FROM dead_letters")
    assert len(dead) == 1
    assert dead[0][0] == b"not json"
    assert dead[0][1].startswith("unreadable journal record")
    # The dead process's journal and lock file are gone; only the live owner's remain.
    assert all(p.name.startswith(spool.owner) for p in journal.parent.iterdir())
    assert not list(journal.parent.glob(f"{owner}*"))
    spool.close()


def test_offsets_left_by_a_process_killed_inside_close_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    out = _run_and_sigkill(
        """
        import os, sys, orjson
        from pathlib import Path
        from selligent_segment.spool import _journal
        from test_sqlite_spool import open_spool, record
        spool = open_spool(Path(sys.argv[1]))
        mark = spool.accept([orjson.dumps(("acme", 1.5e9, record(1)))])
        spool.put_many(marks=[mark], records=[("acme", "delivered", b"{}")])
        print(spool.owner, flush=True)
        close = _journal.Journal.close
        def close_then_die(self, **kwargs):  # killed after the files, before their offsets
            close(self, **kwargs)
            os.kill(os.getpid(), 9)
        _journal.Journal.close = close_then_die
        spool.close()
        """,
        str(path),
    )
    owner = out.strip()
    left = query(path, "SELECT name FROM journals")
    assert [name.split(".", 1)[0] for (name,) in left] == [owner]
    spool = open_spool(path)
    mine = spool.accept([b"live"])  # a live owner's offset stays
    spool.put_many(marks=[mine])
    spool.maintain()
    assert query(path, "SELECT name FROM journals") == [(mine[0],)]
    spool.close()


# -- through the Emitter -------------------------------------------------------------------------


def test_400_refused_messages_end_in_dead_letters_with_reason_and_status(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    poison = {"user7@example.com", "user12@example.com"}

    def refuse(item: Any) -> str | None:
        return "poison" if item.get("anonymousId") in poison else None

    failures: list[DeliveryFailure] = []
    with LocalSegment(strict=True, refuse=refuse) as server:
        em = emitter(server, path, batch=BatchPolicy(linger=5.0), on_failure=failures.append)
        for i in range(20):
            em.emit(record(i))
        assert em.flush(10)
        assert em.close()
        assert server.accepted_count == 18
    rows = query(path, "SELECT tenant, message_id, body, reason, status FROM dead_letters")
    assert {r[1] for r in rows} == ids(record(7), record(12))
    for tenant, _, body, reason, status in rows:
        assert tenant == "acme"
        assert status == 400
        assert "poison" in reason
        assert orjson.loads(body)["anonymousId"] in poison
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]
    assert {m for f in failures for m in f.message_ids} == {r[1] for r in rows}


def _read_request(conn: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """One whole HTTP request from ``conn``: target, lower-cased headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "the connection closed before the request was complete"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = conn.recv(65536)
        assert chunk, "the connection closed before the body was complete"
        body += chunk
    return request_line.split(" ")[1], headers, body


def test_a_batch_in_flight_when_its_process_died_is_resent_with_the_same_message_ids(
    tmp_path: Path, server: LocalSegment
) -> None:
    """The worker dies after its request reached Segment and before the answer came back:
    the next process sends the same events again, under the same messageIds."""
    path = tmp_path / "spool.db"
    script = textwrap.dedent(
        """
        import sys
        from selligent_segment import BatchPolicy, Emitter
        from test_sqlite_spool import KEYS, record
        em = Emitter(write_keys=KEYS, endpoint=sys.argv[1], spool=sys.argv[2],
                     batch=BatchPolicy(linger=0.5))
        em.emit_many([record(i) for i in range(20)])
        em.flush(60)
        """
    )
    # A listener that reads the request and never answers: the request is in flight.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-c", script, url, str(path)], cwd=Path(__file__).parent
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(60)
                target, headers, body = _read_request(conn)
                leased = "SELECT count(*) FROM messages WHERE owner IS NOT NULL"
                assert query(path, leased) == [(20,)]  # leased before sending
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(30) == -signal.SIGKILL
        finally:
            proc.kill()
            proc.wait(30)
    sent = [item["messageId"] for item in orjson.loads(body)["batch"]]
    assert set(sent) == ids(*(record(i) for i in range(20)))
    # Segment did process that request; only its answer was lost with the worker.
    forwarded = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", server.port)) as http_conn:
        http_conn.request("POST", target, body, forwarded)
        assert http_conn.getresponse().status == 200
    assert server.accepted_count == 20

    em = emitter(server, path)
    assert em.flush(10)
    assert em.close()
    # Every event was sent again, under the same messageId: Segment keeps one copy.
    assert server.message_ids() == set(sent)
    assert server.accepted_count == 20
    assert server.duplicates == 20
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


CHILDREN = 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_childs_events_outlive_the_parent_closing_first(
    tmp_path: Path, server: LocalSegment
) -> None:
    """The child's emitter opens the file again; its connection must hold locks of its own
    (the parent's are not inherited), or the parent closing first takes the file as its
    last user and deletes the WAL the child still writes to."""
    path = tmp_path / "spool.db"
    server.outage(503)
    em = emitter(server, path)
    assert em.emit_many([record(i) for i in range(10)]).accepted == 10
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert em.emit_many([record(i, "globex") for i in range(10)]).accepted == 10
            em.flush(0.2)  # into the file: none can be delivered
            os.write(ready_w, b"r")
            os.read(go_r, 1)  # the parent has closed its emitter
            assert em.emit_many([record(i, "globex") for i in range(10, 20)]).accepted == 10
            em.close(0.2)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"r"
        assert not em.close(0.2)
    finally:
        os.write(go_w, b"g")
    assert wait_child(pid, 60) == 0
    assert query(path, "SELECT tenant, count(*) FROM messages GROUP BY tenant ORDER BY 1") == [
        ("acme", 10),
        ("globex", 20),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_deliver_the_shared_file_and_never_resend(
    tmp_path: Path, server: LocalSegment
) -> None:
    """Forks happen while the parent's threads are busy with the file (ingesting, reading
    stats): each child still works, delivering its own events and the shared file."""
    path = tmp_path / "spool.db"
    em = emitter(server, path, batch=BatchPolicy(linger=30.0))
    stop = threading.Event()
    emitted: list[dict[str, Any]] = []

    def keep_emitting() -> None:
        n = 0
        while not stop.is_set():
            if n < 4000:
                chunk = [record(i) for i in range(n, n + 20)]
                assert em.emit_many(chunk).accepted == 20
                emitted.extend(chunk)
                n += 20
            em.stats()  # reads the file, under the spool's lock

    busy = threading.Thread(target=keep_emitting)
    busy.start()
    try:
        for child in range(CHILDREN):
            stop.wait(0.05)  # let the parent's threads get busy (not a synchronisation)
            pid = os.fork()
            if pid == 0:  # the child: its own event (tenant globex) must be delivered
                code = 2
                try:
                    em.emit(record(1000 + child, "globex"))
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        mine = em.stats().tenants.get("globex")
                        if mine is not None and mine.delivered == 1:
                            code = 0
                            break
                        em.flush(0.05)
                    em.close(0.1)  # settles its leases: nothing it sent is sent again
                finally:
                    os._exit(code)
            assert wait_child(pid, 60) == 0, f"child {child}"
    finally:
        stop.set()
        busy.join()
    assert em.flush(30)
    assert em.close()
    children = [record(1000 + child, "globex") for child in range(CHILDREN)]
    assert server.message_ids() == ids(*emitted, *children)
    assert server.duplicates == 0
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


def test_records_keyed_by_a_str_enum_are_journaled_and_delivered(
    tmp_path: Path, server: LocalSegment
) -> None:
    """Field and property names kept in an enum of str: orjson refused its members as
    keys, and ``emit_many`` raised TypeError, losing the records beside them."""

    class Field(str, enum.Enum):
        TYPE = "type"
        EMAIL = "email"
        TENANT = "tenant"
        EVENT_ID = "event_id"
        CAMPAIGN = "campaign_ref"

    records = [
        {
            Field.TYPE: "opened",
            Field.EMAIL: f"u{i}@example.com",
            Field.TENANT: "acme",
            Field.EVENT_ID: f"e-{i}",
            "properties": {Field.CAMPAIGN: i},
        }
        for i in range(3)
    ]
    em = emitter(server, tmp_path / "spool.db")
    assert em.emit_many(records).accepted == 3
    assert em.flush(10)
    assert em.close()
    assert sorted(e["properties"]["campaign_ref"] for e in server.events()) == [0, 1, 2]


def test_emit_many_refuses_bad_records_by_index_and_accepts_the_rest(
    tmp_path: Path, server: LocalSegment
) -> None:
    records = [record(i, "acme" if i % 2 else "globex") for i in range(10)]
    records[2] = record(2, email="not-an-email")
    records[5] = record(5, "initech")
    records[7] = {"type": "opened", "email": "a@example.com"}  # no tenant
    em = emitter(server, tmp_path / "spool.db")
    result = em.emit_many(records)
    assert result.accepted == 7
    assert [index for index, _ in result.refused] == [2, 5, 7]
    assert isinstance(result.refused[0][1], InvalidEvent)
    assert result.refused[0][1].field == "email"
    assert isinstance(result.refused[1][1], UnknownTenant)
    assert isinstance(result.refused[2][1], InvalidEvent)
    assert em.flush(10)
    assert em.close()
    good = [r for i, r in enumerate(records) if i not in (2, 5, 7)]
    assert server.message_ids() == ids(*good)


def test_an_event_over_32_kb_is_a_too_large_dead_letter_and_costs_no_other(
    tmp_path: Path, server: LocalSegment
) -> None:
    path = tmp_path / "spool.db"
    failures: list[DeliveryFailure] = []
    em = emitter(server, path, on_failure=failures.append)
    big = record(1, properties={"blob": "x" * 40_000})
    fits = record(2, properties={"blob": "x" * 20_000})  # a long record, a message that fits
    assert em.emit(record(0))
    assert em.emit(big)
    assert em.emit(fits)
    assert em.emit_many([record(3), big | {"event_id": "ev-big-2"}]).accepted == 2
    assert em.flush(10)
    stats = em.stats()
    assert em.close()
    assert server.message_ids() == ids(record(0), fits, record(3))
    assert stats.rejected == {"too_large": 2}
    assert [f.reason for f in failures] == ["too_large", "too_large"]
    dead = query(path, "SELECT tenant, kind, body, reason FROM dead_letters")
    assert len(dead) == 2
    for tenant, kind, body, reason in dead:
        assert (tenant, kind) == ("acme", "opened")
        assert reason.startswith("too_large: ")
        assert "32 KB" in reason
        assert orjson.loads(body)[2]["properties"] == big["properties"]  # the record, kept


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_emit_many_waits_for_the_encoder_instead_of_refusing(
    tmp_path: Path, server: LocalSegment
) -> None:
    # Far more records than max_pending: a bulk hand-over goes at the spool's pace.
    records = [record(i, "acme" if i % 2 else "globex") for i in range(5_000)]
    em = emitter(server, tmp_path / "spool.db", max_pending=500)
    assert em.emit_many(records).accepted == 5_000
    assert em.stats().refused == {}
    assert em.flush(30)
    assert em.close()
    assert server.message_ids() == ids(*records)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_emit_many_at_the_spool_size_cap_applies_on_full(tmp_path: Path) -> None:
    down = LocalSegment().start()
    url = down.url
    down.stop()  # nothing listens: the file only grows
    em = Emitter(
        write_keys={"acme": "key-acme"},
        endpoint=url,
        spool=tmp_path / "spool.db",
        max_spool_bytes=64 * 1024,
        max_pending=200,
    )
    with pytest.raises(SpoolFull) as raised:
        em.emit_many(record(i, "acme", properties={"blob": "x" * 2000}) for i in range(5_000))
    assert 0 < raised.value.accepted < 5_000
    em.close(0.5)


def test_close_with_segment_down_keeps_the_events_for_the_next_emitter(
    tmp_path: Path, server: LocalSegment
) -> None:
    path = tmp_path / "spool.db"
    failures: list[DeliveryFailure] = []
    server.outage(503)
    em = emitter(server, path, on_failure=failures.append)
    for i in range(10):
        em.emit(record(i))
    assert em.emit_many([record(i, "globex") for i in range(10)]).accepted == 10
    assert not em.close(0.3)
    assert failures == []  # kept, not reported as lost
    assert em.stats().dropped == {}
    assert query(path, "SELECT count(*), count(owner) FROM messages") == [(20, 0)]
    assert [p for p in path.with_name("spool.db.journals").iterdir()] == []
    assert query(path, "SELECT * FROM journals") == []  # no offset of a deleted journal
    assert server.accepted_count == 0

    server.end_outage()
    again = emitter(server, path)
    assert again.flush(10)
    assert again.close()
    assert server.message_ids() == ids(
        *(record(i) for i in range(10)), *(record(i, "globex") for i in range(10))
    )
    assert query(path, "SELECT count(*) FROM messages") == [(0,)]


def test_health_in_the_emitters_process_costs_no_event_when_another_process_closes_the_file(
    tmp_path: Path, server: LocalSegment
) -> None:
    """``health()`` opens the spool file again in the emitter's process. Were that open to
    drop the emitter's locks on the file (POSIX locks belong to the process), the next
    process to close its connection (``spool status``, a worker leaving) would delete the
    WAL under the emitter, and what it wrote after would be gone at its close."""
    path = tmp_path / "spool.db"
    server.outage(503)
    em = emitter(server, path)
    assert em.emit_many([record(i) for i in range(10)]).accepted == 10
    assert health(em).status is not None
    subprocess.run(  # another process reads the file and closes its connection
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; sqlite3.connect(sys.argv[1])"
            ".execute('SELECT count(*) FROM messages').fetchone()",
            str(path),
        ],
        check=True,
    )
    assert em.emit_many([record(i, "globex") for i in range(10)]).accepted == 10
    assert not em.close(0.3)
    assert query(path, "SELECT tenant, count(*) FROM messages GROUP BY tenant ORDER BY 1") == [
        ("acme", 10),
        ("globex", 10),
    ]


def test_a_finished_journal_keeps_its_offset_until_it_is_deleted(
    tmp_path: Path, server: LocalSegment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal ingested to its end is deleted, then its offset: a process killed between
    the two leaves an offset at the end of a file that is gone (nothing to replay), never
    a whole journal without one (replayed from its start: every record twice in the
    file)."""
    monkeypatch.setattr(_journal, "ROTATE_BYTES", 2_000)
    seen: list[tuple[str, int, list[tuple[Any, ...]]]] = []
    real_delete = _journal.Journal.delete

    def delete(journal: _journal.Journal, name: str) -> None:
        size = (journal.directory / name).stat().st_size
        seen.append((name, size, query(path, "SELECT offset FROM journals WHERE name = ?", name)))
        real_delete(journal, name)

    monkeypatch.setattr(_journal.Journal, "delete", delete)
    path = tmp_path / "spool.db"
    server.outage(503)
    em = emitter(server, path)
    for i in range(60):
        em.emit(record(i))
    assert not em.close(0.3)
    assert len(seen) >= 2
    assert [(size, rows) for _, size, rows in seen] == [(size, [(size,)]) for _, size, _ in seen]
    assert query(path, "SELECT * FROM journals") == []
    assert query(path, "SELECT count(*) FROM messages") == [(60,)]


def test_upkeep_says_once_that_journal_writes_let_go_of_the_gil_after_a_slow_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Logged by maintain(), on the upkeep thread: never where emit holds a lock.
    spool = open_spool(tmp_path / "spool.db")
    try:
        spool._journal._slow = "took 12.5 ms"  # as Journal._write leaves it
        with caplog.at_level(logging.INFO, logger="selligent_segment"):
            spool.maintain()
            spool.maintain()
        reasons = [(getattr(r, "reason", None), r.getMessage()) for r in caplog.records]
        lines = [text for reason, text in reasons if reason == "slow_journal_write"]
        assert lines == [
            "a journal write took 12.5 ms; journal writes let go of the GIL for the next 60 s"
        ]
    finally:
        spool.close()


def test_a_record_a_lease_cannot_read_is_reported_through_on_failure_and_counted(
    tmp_path: Path, server: LocalSegment
) -> None:
    """A damaged record becomes a dead letter and costs no other event (as before), and
    it is no longer silent: on_failure gets it (unreadable_record), and stats count it."""
    path = tmp_path / "spool.db"
    open_spool(path).close()  # the schema
    query_write = contextlib.closing(sqlite3.connect(path, timeout=30))
    with query_write as db, db:
        db.execute(
            "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) "
            "VALUES ('acme', '', 'opened', ?, 1.0)",
            (b"not json",),
        )
    failures: list[DeliveryFailure] = []
    with emitter(server, path, on_failure=failures.append) as em:
        assert em.emit(record(1))
        assert em.flush(timeout=30)
        stats = em.stats()
    assert server.accepted_count == 1  # the good event went
    assert [(f.tenant, f.reason, f.message_ids) for f in failures] == [
        ("acme", "unreadable_record", ())
    ]
    assert failures[0].detail == "record: unreadable journal record"
    assert stats.dropped == {"unreadable_record": 1}
    assert query(path, "SELECT reason FROM dead_letters") == [
        ("record: unreadable journal record",)
    ]


def test_an_on_buried_that_raises_costs_a_log_line_never_the_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(tenant: str, error: Exception) -> None:
        raise RuntimeError("the caller's bug")

    path = tmp_path / "spool.db"
    spool = open_spool(path, on_buried=broken)
    try:
        good = orjson.dumps(("acme", 1.5e9, record(1)))
        spool.put_many(records=[("acme", "opened", b"not json"), ("acme", "opened", good)])
        with caplog.at_level(logging.ERROR, logger="selligent_segment"):
            lease = spool.lease("acme", 10, 1 << 20)
        assert lease is not None
        assert [m.message_id for m in lease.messages] == [message_id(record(1))]
        assert "reporting a buried record failed" in caplog.text
        spool.ack(lease, lease.messages)
    finally:
        spool.close()
