"""The durable spool: an acceptance journal in front of an SQLite (WAL) queue.

``accept`` appends to this process's journal (the commit point of ``emit``); the encoder
thread moves accepted records into SQLite with :meth:`SqliteSpool.put_many`, in group
commits that also record how far each journal was ingested. Senders lease batches by
marking rows with this process's owner name, inside one short transaction; no lock of any
kind is held across an HTTP request. :meth:`SqliteSpool.maintain` replays what dead
processes left in their journals, frees their leases and notices work written by others.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import attrs
import orjson

from selligent_segment._errors import ConfigurationError, SelligentSegmentError, SpoolError
from selligent_segment._journal import (
    Damaged,
    Journal,
    Mark,
    claim_dead_owners,
    journals_of,
    read_frames,
)
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment._spool import Lease, SpoolStats
from selligent_segment._spool_db import ForkSafe, journal_dir, open_db, spool_error, transaction

__all__ = ["DeadMessage", "Decoder", "JournalRecord", "SqliteSpool"]

log = logging.getLogger("selligent_segment")

_REPLAY_CHUNK = 5_000
_REFRESH_EVERY = 2.0
_MIN_BYTES = 64 * 1024
#: How often the same ERROR line about an unusable file may repeat from upkeep.
_REPORT_EVERY = 10.0


@attrs.frozen
class DeadMessage:
    """An accepted record that can never be sent, to keep as a dead letter."""

    tenant: str
    message_id: str
    kind: str
    body: bytes
    reason: str


#: Turns a journal payload back into its message (raises SelligentSegmentError if it can't).
Decoder = Callable[[bytes], EncodedMessage]
#: A journal record as it goes into the file: (tenant, kind, payload).
JournalRecord = tuple[str, str, "bytes | memoryview"]


def _kind(kind: object) -> str:
    return str(getattr(kind, "value", kind))


# Records go in with one INSERT of many rows, not executemany: the sqlite3 module lets go
# of the GIL for every step, and with another thread busy in Python each step then waits
# up to sys.getswitchinterval() (5 ms) to get it back. Measured with a busy thread beside
# it, executemany moved ~200 rows/s; one statement per 1,024 rows moves ~40,000.
_ROWS_PER_INSERT = 1024


@functools.lru_cache(maxsize=8)
def _insert_records_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` journal records; parameter 1 is the time, then 3 per row."""
    values = ", ".join(f"(?{3 * i + 2}, '', ?{3 * i + 3}, ?{3 * i + 4}, ?1)" for i in range(rows))
    sql = "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) VALUES "
    return sql + values


def _reject_sql(rows: int) -> str:
    """Dead letters of ``rows`` leased messages, in their order, each with its row's
    acceptance time; parameters 1-3 are the time, reason and status, then 5 per message
    (row id, tenant, message id, kind, body as leased)."""
    values = ", ".join(
        f"({i}, ?{5 * i + 4}, ?{5 * i + 5}, ?{5 * i + 6}, ?{5 * i + 7}, ?{5 * i + 8})"
        for i in range(rows)
    )
    head = "WITH v(seq, id, tenant, message_id, kind, body) AS (VALUES "
    tail = (
        ") INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, failed_at, "
        "reason, status) SELECT v.tenant, v.message_id, v.kind, v.body, "
        "coalesce(m.accepted_at, ?1), ?1, ?2, ?3 "
        "FROM v LEFT JOIN messages AS m ON m.id = v.id ORDER BY v.seq"
    )
    return head + values + tail


def _execute_in_parts(
    db: sqlite3.Connection,
    sql: Callable[[int], str],
    shared: Sequence[object],
    rows: Sequence[Sequence[object]],
) -> None:
    """Run ``sql(n)`` once per part of up to ``_ROWS_PER_INSERT`` rows; its parameters are
    ``shared``, then each row's values in turn."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start : start + _ROWS_PER_INSERT]
        db.execute(sql(len(part)), [*shared, *itertools.chain.from_iterable(part)])


def _head(db: sqlite3.Connection, tenant: str, limit: int) -> list[tuple[int, str, str, bytes]]:
    """The first ``limit`` unleased rows of ``tenant``: (id, message_id, kind, body).

    One aggregate row instead of a row per message: fetching steps once per row, and every
    step lets go of the GIL (see _ROWS_PER_INSERT), so a busy thread slows each one down.
    """
    ids, message_ids, kinds, sizes, bodies = db.execute(
        "SELECT json_group_array(id), json_group_array(message_id), json_group_array(kind), "
        "json_group_array(length(body)), CAST(group_concat(body, '') AS BLOB) FROM "
        "(SELECT id, message_id, kind, body FROM messages "
        "WHERE tenant = ? AND owner IS NULL ORDER BY id LIMIT ?)",
        (tenant, limit),
    ).fetchone()
    rows: list[tuple[int, str, str, bytes]] = []
    pos = 0
    for rowid, message_id, kind, size in zip(
        orjson.loads(ids),
        orjson.loads(message_ids),
        orjson.loads(kinds),
        orjson.loads(sizes),
        strict=True,
    ):
        rows.append((rowid, message_id, kind, bodies[pos : pos + size]))
        pos += size
    return rows


def _ids(rowids: Iterable[int]) -> str:
    return json.dumps(list(rowids))


def _damaged_letter(journal: Path, damaged: Damaged) -> DeadMessage:
    """The dead letter that reports (and keeps) bytes of a journal replay had to skip."""
    reason = f"unreadable: damaged journal bytes at {damaged.start}..{damaged.end} in {journal}"
    return DeadMessage("", "", "", damaged.data, reason)


def _records_of(payloads: Sequence[bytes]) -> tuple[list[JournalRecord], list[DeadMessage]]:
    """Replayed journal payloads as rows to insert; the unreadable ones as dead letters."""
    records: list[JournalRecord] = []
    dead: list[DeadMessage] = []
    for payload in payloads:
        try:
            tenant, _, fields = orjson.loads(payload)
            kind = fields["type"]
            if not isinstance(tenant, str) or not isinstance(kind, str):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            dead.append(DeadMessage("", "", "", payload, "unreadable journal record"))
            continue
        records.append((tenant, kind, payload))
    return records, dead


class SqliteSpool(ForkSafe):
    """A :class:`~selligent_segment._spool.Spool` in an SQLite file, shared by processes.

    Guarantees: a record is durable once :meth:`accept` returns (journal, then database);
    a message stays in the file until acknowledged, or is moved to ``dead_letters`` by
    :meth:`reject`; leases of a dead process are freed and sent again (same messageId).
    """

    durable = True

    def __init__(
        self, path: Path, *, max_bytes: int, decoder: Decoder, fsync: bool = False
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < _MIN_BYTES:
            raise ConfigurationError("max_spool_bytes", f"must be an int of at least {_MIN_BYTES}")
        self.path = path
        self.max_bytes = max_bytes
        self._decoder = decoder
        self._db = open_db(path, fsync=fsync)
        self._lock = threading.Lock()
        self._guard_over_fork()
        self._dir = journal_dir(path)
        try:
            self._journal = Journal(self._dir, fsync=fsync)
        except OSError as exc:
            self._db.close()
            raise SpoolError(
                f"{path}: cannot create this process's journal in {self._dir}: {exc.strerror}"
            ) from None
        self._reported: dict[str, float] = {}  # ERROR lines of upkeep -> when last logged
        self.owner = self._journal.owner
        self._backlog: dict[str, int] = {}
        self._paused: set[str] = set()
        self._leases: dict[int, dict[int, int]] = {}  # lease id -> id(message) -> row id
        try:
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._used = self._measure()
        except sqlite3.Error as exc:
            self._journal.close(delete_current=True)
            self._db.close()
            raise spool_error(path, exc) from None
        self._data_version = -1
        self._last_refresh = float("-inf")
        self._closed = False

    def __repr__(self) -> str:
        return f"<SqliteSpool {str(self.path)!r} owner={self.owner}>"

    # -- accepting ---------------------------------------------------------------------

    def accept(self, payloads: Sequence[bytes]) -> Mark:
        """Journal ``payloads`` durably; the returned mark goes to :meth:`put_many`."""
        return self._journal.append(payloads)

    def accept_frames(self, data: bytes) -> Mark:
        """Journal already-framed records (see ``_journal.frame``) durably."""
        return self._journal.append_frames(data)

    def has_room(self, nbytes: int) -> bool:
        if self._used + nbytes <= self.max_bytes:
            return True
        with self._lock:  # acknowledged batches may have freed pages since
            self._used = self._measure()
        return self._used + nbytes <= self.max_bytes

    def put_many(
        self,
        messages: Sequence[EncodedMessage] = (),
        marks: Sequence[Mark] = (),
        dead: Sequence[DeadMessage] = (),
        records: Sequence[JournalRecord] = (),
    ) -> None:
        """In one transaction: insert ``messages`` (encoded) and ``records`` (journal
        records, encoded when leased), keep ``dead`` as dead letters, and record how far
        each journal of ``marks`` is ingested."""
        now = time.time()
        # A retired journal ingested to its end needs no offset any more: it goes.
        finished = [name for name, off in marks if self._journal.finished(name, off)]
        going = [(name, off) for name, off in marks if name not in finished]
        with self._lock:
            with transaction(self._db) as db:
                if messages:
                    self._insert(db, messages, now)
                _execute_in_parts(db, _insert_records_sql, (now,), records)
                self._insert_dead(db, dead, now)
                db.executemany(
                    "INSERT INTO journals (name, offset) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET offset = excluded.offset",
                    going,
                )
                db.executemany("DELETE FROM journals WHERE name = ?", [(n,) for n in finished])
            self._used = self._measure()
            counts = Counter(m.tenant for m in messages)
            counts.update(r[0] for r in records)
            for tenant, n in counts.items():
                self._backlog[tenant] = self._backlog.get(tenant, 0) + n
        for name in finished:
            self._journal.delete(name)

    @staticmethod
    def _insert(db: sqlite3.Connection, messages: Sequence[EncodedMessage], now: float) -> None:
        db.executemany(
            "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(m.tenant, m.message_id, _kind(m.kind), m.body, now) for m in messages],
        )

    @staticmethod
    def _insert_dead(db: sqlite3.Connection, dead: Sequence[DeadMessage], now: float) -> None:
        db.executemany(
            "INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, failed_at, "
            "reason, status) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [(d.tenant, d.message_id, d.kind, d.body, now, now, d.reason) for d in dead],
        )

    def _measure(self) -> int:
        (used,) = self._db.execute(
            "SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()"
        ).fetchone()
        return int(used) * self._page_size

    # -- leasing -----------------------------------------------------------------------

    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        with self._lock:
            with transaction(self._db) as db:
                rows = _head(db, tenant, max_messages)
                taken: list[EncodedMessage] = []
                rowids: dict[int, int] = {}
                dead: dict[int, DeadMessage] = {}
                size = 0
                seen = 0
                for rowid, message_id, kind, body in rows:
                    if message_id:
                        message = EncodedMessage(tenant, message_id, EventKind(kind), body)
                    else:  # a journal record: it becomes a message now
                        try:
                            message = self._decoder(body)
                        except SelligentSegmentError as exc:
                            dead[rowid] = DeadMessage(tenant, "", kind, body, str(exc))
                            seen += 1
                            continue
                    cost = len(message.body) + 1
                    if taken and size + cost > max_bytes:
                        break
                    taken.append(message)
                    rowids[id(message)] = rowid
                    size += cost
                    seen += 1
                if taken:
                    db.execute(
                        "UPDATE messages SET owner = ? "
                        "WHERE id IN (SELECT value FROM json_each(?))",
                        (self.owner, _ids(rowids.values())),
                    )
                if dead:
                    self._bury(db, dead)
            if not taken or (len(rows) < max_messages and seen == len(rows)):
                self._backlog.pop(tenant, None)  # drained, as far as we can see
            else:
                self._backlog[tenant] = max(1, self._backlog.get(tenant, 0) - seen)
            if not taken:
                return None
            lease = Lease(tenant, tuple(taken))
            self._leases[lease.id] = rowids
            return lease

    def _bury(self, db: sqlite3.Connection, dead: dict[int, DeadMessage]) -> None:
        """Move journal records that cannot become messages to ``dead_letters``."""
        db.executemany(
            "INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, "
            "failed_at, reason, status) SELECT tenant, '', kind, body, accepted_at, ?, ?, NULL "
            "FROM messages WHERE id = ?",
            [(time.time(), d.reason, rowid) for rowid, d in dead.items()],
        )
        db.execute(
            "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))", (_ids(dead),)
        )
        for d in dead.values():
            log.error(
                "selligent-segment: tenant %r: event kept as a dead letter: %s", d.tenant, d.reason
            )

    def _take(self, lease: Lease, messages: Sequence[EncodedMessage]) -> list[int]:
        """Row ids of ``messages`` of ``lease``, which are settled by this call."""
        held = self._leases.get(lease.id)
        if held is None:
            raise ValueError(f"lease {lease.id} is not live")
        try:
            rowids = [held.pop(id(m)) for m in messages]
        except KeyError:
            raise ValueError(f"lease {lease.id}: message settled twice or not leased") from None
        if not held:
            del self._leases[lease.id]
        return rowids

    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        with self._lock:
            rowids = self._take(lease, messages)
            with transaction(self._db) as db:
                if lease.tenant in self._paused:  # delivering again: no longer paused
                    self._paused.discard(lease.tenant)
                    db.execute("DELETE FROM paused WHERE tenant = ?", (lease.tenant,))
                db.execute(
                    "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids(rowids),),
                )

    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        with self._lock:
            rowids = self._take(lease, messages)
            with transaction(self._db) as db:
                db.execute(
                    "UPDATE messages SET owner = NULL WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids(rowids),),
                )
            self._backlog[lease.tenant] = self._backlog.get(lease.tenant, 0) + len(rowids)

    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        with self._lock:
            rowids = self._take(lease, messages)
            with transaction(self._db) as db:
                # The messages as leased (a row may still hold the journal record), with
                # the acceptance time of their rows: one statement per 1,024 messages.
                rows = [
                    (r, m.tenant, m.message_id, _kind(m.kind), m.body)
                    for m, r in zip(messages, rowids, strict=True)
                ]
                _execute_in_parts(db, _reject_sql, (time.time(), reason, status), rows)
                db.execute(
                    "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))",
                    (_ids(rowids),),
                )

    # -- looking -----------------------------------------------------------------------

    def backlog(self, tenant: str) -> int:
        return self._backlog.get(tenant, 0)

    def tenants(self) -> list[str]:
        with self._lock:
            return [t for t, n in self._backlog.items() if n > 0]

    def empty(self) -> bool:
        """True when the file holds no message to send (dead letters aside)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None

    def stats(self) -> SpoolStats:
        """Counts and size of the file as this process knows them; SpoolError naming the
        file when it cannot be read (a damaged file, say)."""
        try:
            with self._lock:
                (counts,) = self._db.execute(
                    "SELECT json_group_object(tenant, json_array(n, leased)) FROM "
                    "(SELECT tenant, count(*) AS n, count(owner) AS leased FROM messages "
                    "GROUP BY tenant)"
                ).fetchone()
                used = self._measure()
        except sqlite3.Error as exc:
            raise spool_error(self.path, exc) from None
        rows: dict[str, list[int]] = orjson.loads(counts)
        per_tenant = {tenant: n for tenant, (n, _) in rows.items()}
        return SpoolStats(
            sum(per_tenant.values()), used, sum(leased for _, leased in rows.values()), per_tenant
        )

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        """Record (or clear, with None) that ``tenant`` is paused, for ``spool status``."""
        with self._lock, transaction(self._db) as db:
            if reason is None:
                self._paused.discard(tenant)
            else:
                self._paused.add(tenant)
            if reason is None:
                db.execute("DELETE FROM paused WHERE tenant = ?", (tenant,))
            else:
                db.execute(
                    "INSERT INTO paused (tenant, reason, since) VALUES (?, ?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET reason = excluded.reason",
                    (tenant, reason, time.time()),
                )

    # -- upkeep --------------------------------------------------------------------------

    def maintain(self, force: bool = False) -> list[str]:
        """Replay dead processes' journals, free their leases, notice others' writes.

        Returns the tenants that have messages to send (for the dispatcher). A file or
        journal directory that cannot be used (damaged, not writable...) costs the round:
        one ERROR line naming the file and the reason (no traceback, the same line at most
        every ``_REPORT_EVERY`` seconds), and the next round tries again.
        """
        try:
            return self._upkeep(force)
        except sqlite3.Error as exc:
            self._report(spool_error(self.path, exc))
        except SpoolError as exc:
            self._report(exc)
        except OSError as exc:
            where = exc.filename or self._dir
            self._report(SpoolError(f"{self.path}: cannot use {where}: {exc.strerror}"))
        return []

    def _report(self, error: SpoolError) -> None:
        """Log ``error`` at ERROR without a traceback, the same text at most every
        ``_REPORT_EVERY`` seconds (upkeep runs every second or so)."""
        now = time.monotonic()
        text = str(error)
        if now - self._reported.get(text, float("-inf")) < _REPORT_EVERY:
            return
        self._reported[text] = now
        log.error("selligent-segment: %s", text)

    def _upkeep(self, force: bool) -> list[str]:
        recovered = self._recover()
        with self._lock:
            now = time.monotonic()
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if not (force or recovered or version != self._data_version):
                return []
            if not force and not recovered and now - self._last_refresh < _REFRESH_EVERY:
                return []
            self._data_version = version
            self._last_refresh = now
            (counts,) = self._db.execute(
                "SELECT json_group_object(tenant, n) FROM (SELECT tenant, count(*) AS n "
                "FROM messages WHERE owner IS NULL GROUP BY tenant)"
            ).fetchone()
            self._backlog = orjson.loads(counts)
            self._used = self._measure()
            return list(self._backlog)

    def _recover(self) -> bool:
        recovered = False
        with claim_dead_owners(self._dir, skip=self.owner) as dead:
            for owner in dead:
                self._replay_owner(owner)
                recovered = True
        with self._lock:
            owners = [
                row[0]
                for row in self._db.execute(
                    "SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL"
                )
            ]
        for owner in owners:
            if owner != self.owner and not (self._dir / f"{owner}.owner").exists():
                self._free_leases(owner)  # owner gone without its lock file
                recovered = True
        self._forget_gone_journals()
        return recovered

    def _forget_gone_journals(self) -> None:
        """Drop the offsets of journals that are gone with their owner: a process killed
        in ``close`` between deleting its files and their offsets leaves them behind. (An
        owner's lock file comes before its first journal, its offsets after.)"""
        with self._lock:
            names = [row[0] for row in self._db.execute("SELECT name FROM journals")]
        gone = [
            (name,)
            for name in names
            if not name.startswith(self.owner + ".")
            and not (self._dir / f"{name.split('.', 1)[0]}.owner").exists()
            and not (self._dir / name).exists()
        ]
        if gone:
            with self._lock, transaction(self._db) as db:
                db.executemany("DELETE FROM journals WHERE name = ?", gone)

    def _replay_owner(self, owner: str) -> None:
        replayed = read = 0
        for name in journals_of(self._dir, owner):
            with self._lock:
                row = self._db.execute(
                    "SELECT offset FROM journals WHERE name = ?", (name,)
                ).fetchone()
            offset = row[0] if row else 0
            try:
                frames = list(read_frames(self._dir / name, offset))
            except FileNotFoundError:
                continue
            except SpoolError as exc:  # not a journal: left untouched, reported
                self._report(exc)
                continue
            read += 1
            for start in range(0, len(frames), _REPLAY_CHUNK):
                chunk = frames[start : start + _REPLAY_CHUNK]
                payloads = [p for _, p in chunk if not isinstance(p, Damaged)]
                records, dead = _records_of(payloads)
                damaged = [p for _, p in chunk if isinstance(p, Damaged)]
                dead += [_damaged_letter(self._dir / name, d) for d in damaged]
                self.put_many((), [(name, chunk[-1][0])], dead, records)
                replayed += len(payloads)
                for d in damaged:  # logged once kept (a crash before replays them again)
                    log.error(
                        "selligent-segment: damaged journal bytes at %d..%d in %s skipped: "
                        "the events in those %d bytes cannot be sent; the bytes are kept as a "
                        "dead letter (selligent-segment dead-letters list --reason unreadable)",
                        d.start,
                        d.end,
                        self._dir / name,
                        d.end - d.start,
                    )
            with self._lock, transaction(self._db) as db:
                db.execute("DELETE FROM journals WHERE name = ?", (name,))
            (self._dir / name).unlink(missing_ok=True)
        freed = self._free_leases(owner)
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM journals WHERE name LIKE ?", (owner + ".%",))
        if not (read or freed):  # only files that are not journals (reported above)
            return
        log.warning(
            "selligent-segment: recovered after a stopped process (%s): %d events replayed "
            "from its journal, %d leased events to send again",
            owner,
            replayed,
            freed,
        )

    def _free_leases(self, owner: str) -> int:
        with self._lock, transaction(self._db) as db:
            freed = db.execute("UPDATE messages SET owner = NULL WHERE owner = ?", (owner,))
            return freed.rowcount

    # -- life --------------------------------------------------------------------------

    def close(self, *, ingested: bool = True) -> None:
        """Free this process's leases and stop; delete the journals when ``ingested``.

        What is queued stays in the file for the next start or another process.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._free_leases(self.owner)
            self._leases.clear()
        except sqlite3.Error as exc:  # pragma: no cover - the next start frees them
            log.error("selligent-segment: could not free leases at close: %s", exc)
        self._journal.close(delete_current=ingested)
        with self._lock:
            if ingested:  # the journals are gone: so are their offsets
                with contextlib.suppress(sqlite3.Error), transaction(self._db) as db:
                    db.execute("DELETE FROM journals WHERE name LIKE ?", (self.owner + ".%",))
            self._db.close()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's journal and connection untouched."""
        self._closed = True
        self._journal.abandon()
        self._abandon_db(self._db)
