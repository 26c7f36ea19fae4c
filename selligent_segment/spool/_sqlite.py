"""The durable spool's queue: an acceptance journal in front of an SQLite (WAL) file.

``accept`` appends to this process's journal (the commit point of ``emit``); the encoder
thread moves accepted records into SQLite with :meth:`SqliteSpool.put_many`, in group
commits that also record how far each journal was ingested. Senders lease batches by
marking rows with this process's owner name, inside one short transaction, and settle
them; no lock of any kind is held across an HTTP request. :meth:`SqliteSpool.maintain`
retries what could not be written (:mod:`._unwritten`), recovers dead processes
(:mod:`._recovery`) and notices work written by others.

Guarantee: a record is durable once ``accept`` returns; a message leaves the file only
acknowledged or as a dead letter, and is in one live lease of this process at most; an
``sqlite3`` error leaves :class:`SqliteSpool` as a :class:`~selligent_segment.SpoolError`
naming the file (see the class for what happens while the file cannot be written).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import itertools
import logging
import operator
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import attrs
import orjson

from selligent_segment._errors import (
    ConfigurationError,
    SelligentSegmentError,
    SpoolError,
    shown,
    writable,
)
from selligent_segment._mapping import TENANT_OF, EncodedMessage, _new_message
from selligent_segment._record import EventKind
from selligent_segment._throttle import Throttle
from selligent_segment.spool._journal import HOLD_OFF, Journal, Mark
from selligent_segment.spool._protocol import (
    Lease,
    OnBuried,
    SpoolStats,
    buried_reason,
    tell_buried,
)
from selligent_segment.spool._recovery import Recovery
from selligent_segment.spool._schema import (
    ForkSafe,
    journal_dir,
    open_db,
    snapshot,
    spool_error,
    transaction,
)
from selligent_segment.spool._statements import (
    DeadMessage,
    HeadColumns,
    JournalRecord,
    bury,
    head_columns,
    ids,
    insert_dead,
    insert_in_parts,
    insert_messages,
    insert_records_sql,
    kind_of,
)
from selligent_segment.spool._unwritten import Unwritten

__all__ = ["DeadMessage", "Decoder", "JournalRecord", "SqliteSpool"]

log = logging.getLogger("selligent_segment")

_REFRESH_EVERY = 2.0
_MIN_BYTES = 64 * 1024
#: How often the same ERROR line about an unusable file may repeat from upkeep.
_REPORT_EVERY = 10.0

# A row's kind as an EventKind when it is one (another producer's kind stays text).
_KINDS: dict[str, EventKind | str] = {k.value: k for k in EventKind}

#: Turns a journal payload back into its message (raises SelligentSegmentError if it can't).
Decoder = Callable[[bytes], EncodedMessage]

#: Bytes of message bodies a process may keep in memory as well as in the file, leased to
#: itself from the moment they are written (``put_many(..., keep=True)``): its senders
#: lease them with no statement (no read of the queue, no ``UPDATE`` of the rows). About
#: eight requests of 500 KB; what comes beyond it goes into the file free, as before.
KEEP_BYTES = 4 * 1024 * 1024
#: The largest row id: SQLite gives a new row the largest id plus one until then.
_MAX_ROWID = 2**63 - 1


@attrs.define
class _Pick:
    """What a lease takes: messages with their row ids, rows read from the file and how
    many of them it consumed, rows it took back from ``freed``, records it buries."""

    read: int
    taken: list[EncodedMessage] = attrs.Factory(list)
    rowids: dict[int, int] = attrs.Factory(dict)  # id(message) -> row id
    fresh: list[int] = attrs.Factory(list)  # row ids taken from the file's free rows
    back: list[int] = attrs.Factory(list)  # row ids taken back from Unwritten.freed
    kept: list[int] = attrs.Factory(list)  # row ids taken from the rows kept at put_many
    seen: int = 0
    dead: dict[int, DeadMessage] = attrs.Factory(dict)
    errors: list[SelligentSegmentError] = attrs.Factory(list)  # why each was buried


def _pick_rows(
    tenant: str,
    entries: Iterable[tuple[int, str, str, bytes]],
    read: int,
    max_messages: int,
    max_bytes: int,
    decoder: Decoder,
    freed: dict[int, EncodedMessage] | None = None,
    kept: Container[int] = (),
) -> _Pick:
    """What a lease takes of ``entries`` (row id, message id, kind, body; ``read`` of them
    read from the file), row by row: journal records decoded (or buried), messages taken
    while ``max_messages`` and ``max_bytes`` allow (one at least); the rows of ``freed``
    taken back, those of ``kept`` (leased to this process since they were put) taken as
    they are."""
    pick = _Pick(read)
    size = 0
    for rowid, message_id, kind, body in entries:
        if message_id:
            message = EncodedMessage(tenant, message_id, _KINDS.get(kind, kind), body)
        else:  # a journal record: it becomes a message now
            try:
                message = decoder(body)
            except SelligentSegmentError as exc:
                pick.dead[rowid] = DeadMessage(tenant, "", kind, body, str(exc))
                pick.errors.append(exc)
                pick.seen += 1
                continue
        cost = len(message.body) + 1
        if pick.taken and (size + cost > max_bytes or len(pick.taken) >= max_messages):
            break
        pick.taken.append(message)
        pick.rowids[id(message)] = rowid
        size += cost
        if freed and rowid in freed:
            pick.back.append(rowid)
        elif rowid in kept:
            pick.kept.append(rowid)
        else:
            pick.fresh.append(rowid)
            pick.seen += 1
    return pick


def _pick_kept(
    kept: Sequence[tuple[int, EncodedMessage]], max_messages: int, max_bytes: int
) -> _Pick:
    """:func:`_pick_rows` for rows all kept in memory since they were put (none read from
    the file, none freed), without building their messages again. Equal to it on the same
    rows (tested)."""
    pick = _Pick(0)
    taken, rowids = pick.taken, pick.rowids
    size = 0
    for rowid, message in kept:
        cost = len(message.body) + 1
        if taken and (size + cost > max_bytes or len(taken) >= max_messages):
            break
        taken.append(message)
        rowids[id(message)] = rowid
        size += cost
    pick.kept = list(rowids.values())
    return pick


def _pick_messages(tenant: str, columns: HeadColumns, max_messages: int, max_bytes: int) -> _Pick:
    """:func:`_pick_rows` for rows that all hold encoded messages (none freed), without a
    Python step per row but building each message: how many fit is found from the sizes
    at once. Equal to :func:`_pick_rows` on the same rows (tested)."""
    rowids, message_ids, kinds, sizes, bodies = columns
    read = len(rowids)
    # Row i is taken when the bodies of rows 0..i, plus one byte each, fit (row 0 always).
    costs = itertools.accumulate(map(operator.add, sizes, itertools.repeat(1)))
    n = max(1, bisect.bisect_right(list(costs), max_bytes))
    n = min(n, read, max_messages)
    offsets = list(itertools.accumulate(sizes[:n], initial=0))
    taken = list(
        map(
            _new_message,
            itertools.repeat(tenant, n),
            message_ids[:n],
            map(_KINDS.get, kinds[:n], kinds[:n]),
            [bodies[a:b] for a, b in itertools.pairwise(offsets)],
        )
    )
    fresh = rowids[:n]
    return _Pick(read, taken, dict(zip(map(id, taken), fresh, strict=True)), fresh, seen=n)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _named_errors(
    method: Callable[Concatenate[SqliteSpool, _P], _R],
) -> Callable[Concatenate[SqliteSpool, _P], _R]:
    """A database error the method does not handle itself (a corrupt page, a file this
    process may not write) leaves it as a :class:`SpoolError` naming the file and what is
    wrong, never as a raw ``sqlite3`` error."""

    @functools.wraps(method)
    def named(self: SqliteSpool, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise spool_error(self.path, exc) from None

    return named


class SqliteSpool(ForkSafe):
    """A :class:`~selligent_segment.spool._protocol.Spool` in an SQLite file, shared by processes.

    Guarantees: a record is durable once :meth:`accept` returns (journal, then database);
    a message stays in the file until acknowledged, or is moved to ``dead_letters`` by
    :meth:`reject`; leases of a dead process are freed and sent again (same messageId).
    When the file cannot be written (disk full, locked), leases and settlements are kept
    in memory and written later (see :class:`~selligent_segment.spool._unwritten.Unwritten`);
    a batch leased in memory only may then be sent by another process too (same messageId).
    """

    durable = True

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        decoder: Decoder,
        fsync: bool = False,
        on_buried: OnBuried | None = None,
        defer_acks: Callable[[], bool] | None = None,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < _MIN_BYTES:
            raise ConfigurationError("max_spool_bytes", f"must be an int of at least {_MIN_BYTES}")
        self.path = path
        self.max_bytes = max_bytes
        self._decoder = decoder
        self._on_buried = on_buried
        self._defer_acks = defer_acks
        # The lock held over a fork from the connection's first statement: a child forked
        # meanwhile closes it as it does every idle one (see ForkSafe).
        self._lock = threading.Lock()
        with self._lock:
            self._guard_over_fork()
            self._db = open_db(path, fsync=fsync)
            self._dir = journal_dir(path)
            try:
                self._journal = Journal(self._dir, fsync=fsync)
            except OSError as exc:
                self._db.close()
                raise SpoolError(
                    f"{path}: cannot create this process's journal in {self._dir}: {exc.strerror}"
                ) from None
            self._reports = Throttle(_REPORT_EVERY)  # the ERROR lines of upkeep, by text
            # How far each of this process's journals is in the file (its offset row).
            self._ingested: dict[str, int] = {}
            self.owner = self._journal.owner
            self._backlog: dict[str, int] = {}
            self._unwritten = Unwritten(self._db, path, self.owner)  # what the file lacks yet
            self._recovery = Recovery(self._db, self._lock, self._dir, self.owner)
            self._leases: dict[int, dict[int, int]] = {}  # lease id -> id(message) -> row id
            # Rows put with keep=True and not leased yet, per tenant in row order: leased to
            # this process in the file since they were written (see KEEP_BYTES).
            self._kept: dict[str, deque[tuple[int, EncodedMessage]]] = {}
            self._kept_bytes = 0
            self._keeping = True  # False from a release (a retry) to the next acknowledgement
            self._kept_full = False  # KEEP_BYTES reached: True until half of it is leased
            # Tenants not kept: released (a retry) since their last acknowledgement, or paused.
            self._unkept: set[str] = set()
            self._paused: set[str] = set()  # marked paused by this process (mark_paused)
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

    @_named_errors
    def has_room(self, nbytes: int) -> bool:
        if self._used + nbytes <= self.max_bytes:
            return True
        with self._lock:  # acknowledged batches may have freed pages since
            self._write_pending()  # acknowledgements not written yet among them
            self._used = self._measure()
        return self._used + nbytes <= self.max_bytes

    @_named_errors
    def put_many(
        self,
        messages: Sequence[EncodedMessage] = (),
        marks: Sequence[Mark] = (),
        dead: Sequence[DeadMessage] = (),
        records: Sequence[JournalRecord] = (),
        *,
        keep: bool = False,
    ) -> None:
        """In one transaction: insert ``messages`` (encoded) and ``records`` (journal
        records, encoded when leased), keep ``dead`` as dead letters, and record how far
        each journal of ``marks`` is ingested.

        With ``keep`` (``messages`` distinct objects), the first of ``messages`` that fit
        under :data:`KEEP_BYTES` are written leased to this process and kept in memory
        too: the next leases take them from there, in row order with the file's free
        rows, without a statement. Until leased they count as queued, not as leased; a
        process that dies or closes frees them in the file like any lease."""
        now = time.time()
        # A retired journal ingested to its end needs no offset any more: it goes.
        finished = [name for name, off in marks if self._journal.finished(name, off)]
        # A journal retired after its last write was moved in (by an append that came
        # later) has its final mark in the file already and gets no other: finished too.
        finished += [
            name
            for name, size in self._journal.retired_sizes().items()
            if name not in finished and self._ingested.get(name) == size
        ]
        # A finished journal's offset goes in at its end like any other, and is deleted
        # after the file (below): a kill between the two leaves an offset at the end of a
        # file that is gone, never a journal without one (replayed from its start).
        going = list(marks)
        with self._lock:
            joined = self._unwritten.pending() and self._put_joined(
                messages, keep, records, dead, going, now
            )
            if joined:
                kept, free, full, first = joined
            else:
                with transaction(self._db) as db:
                    kept, free, full, first = self._insert(
                        db, messages, keep, records, dead, going, now
                    )
            # Committed: nothing below may raise, or the caller would insert them again.
            self._ingested.update(going)
            for name in finished:
                self._ingested.pop(name, None)
            with contextlib.suppress(sqlite3.Error):
                self._used = self._measure()
            if kept:
                self._keep(kept, first)
            if full:
                self._kept_full = True
            counts = Counter(map(TENANT_OF, free))
            counts.update(r[0] for r in records)
            for tenant, n in counts.items():
                self._backlog[tenant] = self._backlog.get(tenant, 0) + n
        deleted = []
        for name in finished:
            with contextlib.suppress(OSError):  # upkeep deletes a finished journal later
                self._journal.delete(name)
                deleted.append((name,))
        if deleted:  # a leftover points past the end of a file that is gone: harmless
            with contextlib.suppress(sqlite3.Error), self._lock, transaction(self._db) as db:
                db.executemany("DELETE FROM journals WHERE name = ?", deleted)

    def _put_joined(
        self,
        messages: Sequence[EncodedMessage],
        keep: bool,
        records: Sequence[JournalRecord],
        dead: Sequence[DeadMessage],
        going: list[Mark],
        now: float,
    ) -> tuple[list[EncodedMessage], Sequence[EncodedMessage], bool, int] | None:
        """:meth:`put_many`'s write with what this process settled and has not written
        yet first, in the same transaction (one commit, one fsync with ``fsync=True``):
        what was kept, not kept, whether the budget cut it short, the first kept row id.

        None when it could not be made; then the settled were written by themselves
        first, as they were before (a failure kept and reported, never raised), and the
        caller makes the rest of the write. A transaction that cannot even begin (the
        file's write lock another process's past the busy timeout, say) is that write of
        the settled failing: kept and reported, not tried (nor waited for) twice."""
        begun = False
        try:
            with transaction(self._db) as db:
                begun = True
                self._unwritten.write_in(db)
                put = self._insert(db, messages, keep, records, dead, going, now)
        except sqlite3.Error as exc:
            if begun:
                self._write_pending()
            else:
                self._unwritten.failed(exc)
            return None
        self._unwritten.committed(self._backlog)
        return put

    def _insert(
        self,
        db: sqlite3.Connection,
        messages: Sequence[EncodedMessage],
        keep: bool,
        records: Sequence[JournalRecord],
        dead: Sequence[DeadMessage],
        going: list[Mark],
        now: float,
    ) -> tuple[list[EncodedMessage], Sequence[EncodedMessage], bool, int]:
        """The statements of :meth:`put_many` in ``db``'s open transaction; returns the
        messages kept and those not (none kept when their row ids would not be the
        largest plus one), whether the keep budget cut them short, and the first kept
        one's row id."""
        kept, free, full = self._to_keep(messages) if keep else ([], messages, False)
        first = 0
        if kept:
            (last,) = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
            if last + len(kept) > _MAX_ROWID:  # ids no longer the largest plus one
                kept, free = [], messages
            else:
                first = int(last) + 1
                insert_messages(db, kept, now, first=first, owner=self.owner)
        if free:
            insert_messages(db, free, now)
        if records:
            rows = [(tenant, kind, body, now) for tenant, kind, body in records]
            insert_in_parts(db, insert_records_sql, rows)
        insert_dead(db, dead, now)
        db.executemany(
            "INSERT INTO journals (name, offset) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET offset = excluded.offset",
            going,
        )
        return kept, free, full, first

    def keeping(self) -> bool:
        """True while ``put_many(keep=True)`` would keep messages: :data:`KEEP_BYTES` not
        reached (or half of it leased since), and no batch released for a retry since the
        last acknowledgement (this process's senders take what comes as it comes)."""
        return self._keeping and not self._kept_full

    def unkept(self) -> frozenset[str]:
        """The tenants whose rows are not kept now: paused, or retried since their last
        acknowledgement (another process may send them meanwhile)."""
        return frozenset(self._unkept)

    def _to_keep(
        self, messages: Sequence[EncodedMessage]
    ) -> tuple[list[EncodedMessage], Sequence[EncodedMessage], bool]:
        """``messages`` split into those to keep and the others, each in order, and
        whether :data:`KEEP_BYTES` cut them short. Kept: the first that fit, but those of
        tenants released or paused since their last acknowledgement (another process may
        send them meanwhile). None while this process holds rows in memory only (the
        file could not be written: their ids may come back, see ``Unwritten.stamps``)."""
        unwritten = self._unwritten
        if (
            not self.keeping()
            or unwritten.held
            or unwritten.stamps
            or unwritten.failing
            or len({id(m) for m in messages}) != len(messages)
        ):
            return [], messages, False
        room = KEEP_BYTES - self._kept_bytes
        unkept = self._unkept
        kept: list[EncodedMessage] = []
        free: list[EncodedMessage] = []
        full = False
        for message in messages:
            if full or message.tenant in unkept:
                free.append(message)
            elif len(message.body) > room:
                full = True
                free.append(message)
            else:
                room -= len(message.body)
                kept.append(message)
        return kept, free, full

    def _write_pending(self) -> None:
        """Write what ``_unwritten`` keeps, if anything (see :meth:`_write_unwritten`):
        the write that follows goes on."""
        if self._unwritten.pending():
            self._write_unwritten()

    def _keep(self, messages: Sequence[EncodedMessage], first: int) -> None:
        """Keep ``messages``, just written leased to this process from row id ``first`` on."""
        kept = self._kept
        for rowid, message in enumerate(messages, first):
            rows = kept.get(message.tenant)
            if rows is None:
                rows = kept[message.tenant] = deque()
            rows.append((rowid, message))
        self._kept_bytes += sum(len(m.body) for m in messages)

    def _free_kept(self, tenant: str) -> None:
        """``tenant``'s kept rows back to the file's queue at their place, free for any
        process (written with the next write), and none kept until its next
        acknowledgement."""
        self._unkept.add(tenant)
        rows = self._kept.pop(tenant, None)
        if rows:
            self._unwritten.freed.setdefault(tenant, {}).update(rows)
            self._kept_bytes -= sum(len(message.body) for _, message in rows)
            self._drained()

    def _drained(self) -> None:
        """Keep again once half of :data:`KEEP_BYTES` was leased (or freed)."""
        if self._kept_full and self._kept_bytes <= KEEP_BYTES // 2:
            self._kept_full = False

    def _let_go_kept(self, tenant: str, rowids: list[int]) -> None:
        """Forget the kept rows ``rowids`` of ``tenant``, just leased (the first kept)."""
        rows = self._kept[tenant]
        for rowid in rowids:
            kept_id, message = rows.popleft()
            if kept_id != rowid:  # pragma: no cover - a lease takes the first kept rows
                raise AssertionError(f"kept row {kept_id} leased out of order ({rowid})")
            self._kept_bytes -= len(message.body)
        if not rows:
            del self._kept[tenant]
        self._drained()

    def _measure(self) -> int:
        (used,) = self._db.execute(
            "SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()"
        ).fetchone()
        return int(used) * self._page_size

    # -- leasing -----------------------------------------------------------------------

    @_named_errors
    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        """Take a batch from the head of ``tenant``'s queue (see ``Spool.lease``).

        When the lease cannot be written (disk full, file locked past the busy timeout),
        this process holds the batch in memory instead, and delivery goes on. A record
        that cannot become its message is buried (a dead letter, logged) and handed to
        ``on_buried``, once, after the spool's lock is let go."""
        buried: list[SelligentSegmentError] = []
        try:
            return self._lease(tenant, max_messages, max_bytes, buried)
        finally:
            tell_buried(self._on_buried, tenant, buried)

    def _lease(
        self, tenant: str, max_messages: int, max_bytes: int, buried: list[SelligentSegmentError]
    ) -> Lease | None:
        with self._lock:
            kept = self._kept.get(tenant)
            if kept and not self._backlog.get(tenant) and not self._unwritten.freed.get(tenant):
                # No free row of the tenant in the file, as far as this process knows
                # (another process's are noticed at upkeep): the kept rows, no statement.
                taken = _pick_kept(kept, max_messages, max_bytes)
                self._let_go_kept(tenant, taken.kept)
                lease = Lease(tenant, tuple(taken.taken))
                self._leases[lease.id] = taken.rowids
                return lease
            pick: _Pick | None = None
            if not self._unwritten.pending() or self._write_unwritten():
                try:
                    with transaction(self._db) as db:
                        pick = self._pick(db, tenant, max_messages, max_bytes)
                        self._mark_leased(db, pick)
                except sqlite3.OperationalError as exc:
                    self._unwritten.failed(exc)
                    pick = None
            if pick is None:  # nothing can be written now: lease in memory
                with snapshot(self._db) as db:  # the rows and their stamps
                    pick = self._pick(db, tenant, max_messages, max_bytes)
                    stamps = db.execute(
                        "SELECT id, accepted_at FROM messages "
                        "WHERE id IN (SELECT value FROM json_each(?))",
                        (ids([*pick.fresh, *pick.dead]),),
                    ).fetchall()
                self._unwritten.hold(tenant, pick.fresh, pick.back, pick.dead, dict(stamps))
            if pick.kept:
                self._let_go_kept(tenant, pick.kept)
            for d, error in zip(pick.dead.values(), pick.errors, strict=True):
                log.error(
                    "tenant %s: event kept as a dead letter: %s",
                    shown(d.tenant),
                    d.reason,
                    extra={"tenant": d.tenant, "reason": str(buried_reason(error))},
                )
            buried += pick.errors
            if not pick.taken or (pick.read < max_messages and pick.seen == pick.read):
                self._backlog.pop(tenant, None)  # drained, as far as we can see
            else:
                self._backlog[tenant] = max(1, self._backlog.get(tenant, 0) - pick.seen)
            if not pick.taken:
                return None
            lease = Lease(tenant, tuple(pick.taken))
            self._leases[lease.id] = pick.rowids
            return lease

    def _pick(
        self, db: sqlite3.Connection, tenant: str, max_messages: int, max_bytes: int
    ) -> _Pick:
        """The head of ``tenant``'s queue as this process knows it, in row (acceptance)
        order: the file's free rows but those this process holds or settled, merged with
        the rows it released while the file could not be written. Changes nothing."""
        unwritten = self._unwritten
        columns = head_columns(db, tenant, max_messages, unwritten.hidden(tenant))
        freed = unwritten.freed.get(tenant)
        kept = self._kept.get(tenant)
        if kept:
            if not freed and not columns[0]:  # none free in the file: from memory only
                return _pick_kept(kept, max_messages, max_bytes)
        elif not freed and "" not in columns[1]:  # encoded messages only: column by column
            return _pick_messages(tenant, columns, max_messages, max_bytes)
        rowids, message_ids, kinds, sizes, bodies = columns
        rows: list[tuple[int, str, str, bytes]] = []
        pos = 0
        for rowid, message_id, kind, size in zip(rowids, message_ids, kinds, sizes, strict=True):
            rows.append((rowid, message_id, kind, bodies[pos : pos + size]))
            pos += size
        entries: Iterable[tuple[int, str, str, bytes]] = rows
        if freed:
            back = sorted((r, m.message_id, kind_of(m.kind), m.body) for r, m in freed.items())
            entries = heapq.merge(back, entries)
        mine: dict[int, None] = {}
        if kept:  # in row order already; a lease takes max_messages at most
            first = list(itertools.islice(kept, max_messages))
            mine = dict.fromkeys(r for r, _ in first)
            ours = ((r, m.message_id, kind_of(m.kind), m.body) for r, m in first)
            entries = heapq.merge(ours, entries)
        return _pick_rows(
            tenant, entries, len(rows), max_messages, max_bytes, self._decoder, freed, mine
        )

    def _mark_leased(self, db: sqlite3.Connection, pick: _Pick) -> None:
        """Write ``pick``: its rows leased by this process, its dead records buried."""
        if pick.fresh:
            db.execute(
                "UPDATE messages SET owner = ? WHERE id IN (SELECT value FROM json_each(?))",
                (self.owner, ids(pick.fresh)),
            )
        if pick.dead:
            bury(db, pick.dead, self._unwritten.stamps)

    def _take(self, lease: Lease, messages: Sequence[EncodedMessage]) -> list[int]:
        """Row ids of ``messages`` of ``lease``, which are settled by this call."""
        held = self._leases.get(lease.id)
        if held is None:
            raise ValueError(f"lease {lease.id} is not live")
        if messages is lease.messages and len(held) == len(messages):
            # The whole lease, nothing of it settled yet: its row ids in lease order, which
            # is the order ``held`` was filled in (what the loop below gives, row by row).
            del self._leases[lease.id]
            return list(held.values())
        try:
            rowids = [held.pop(id(m)) for m in messages]
        except KeyError:
            raise ValueError(f"lease {lease.id}: message settled twice or not leased") from None
        if not held:
            del self._leases[lease.id]
        return rowids

    # Settling never raises for a write that fails: the outcome is kept in _unwritten,
    # which counts for this process at once and is written by the next write.

    @_named_errors
    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Delete ``messages``: Segment accepted them. Also clears the tenant's ``paused``
        mark in the file, whoever set it: its key works again.

        While ``defer_acks()`` says a write of this process comes soon (the encoder has
        records to move in), the deletion waits for it (or for upkeep, within a second):
        a sender then never waits on the file, nor lets go of the GIL for it, between two
        requests. For this process the messages are gone at once; a process killed
        before the write sends them again (same messageId)."""
        with self._lock:
            rowids = self._take(lease, messages)
            self._unwritten.settled(lease.tenant, rowids)
            self._unwritten.paused[lease.tenant] = None
            self._keeping = True
            if lease.tenant not in self._paused:  # a late answer of a paused tenant's
                self._unkept.discard(lease.tenant)
            if self._defer_acks is None or not self._defer_acks():
                self._write_unwritten()

    @_named_errors
    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Free ``messages`` for a later lease, back at the head of the queue in order.
        The tenant's rows kept since they were put go back to the file's queue too (for
        any process), and none of its rows is kept until its next acknowledgement; the
        encoder moves records in as they are until a batch is acknowledged (see
        :meth:`keeping`: an outage costs no encoding)."""
        with self._lock:
            rowids = self._take(lease, messages)
            tenant = lease.tenant
            in_memory = self._unwritten.release(tenant, messages, rowids)
            if in_memory:  # leased in memory only: the file shows them free already
                self._backlog[tenant] = self._backlog.get(tenant, 0) + in_memory
            self._keeping = False
            self._free_kept(tenant)
            self._write_unwritten()

    @_named_errors
    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        """Move ``messages`` to ``dead_letters`` with the reason and status. A file that
        refuses the write does not make this raise: the rejection is kept in memory, the
        failure logged, and it is written with the next write that succeeds."""
        with self._lock:
            rowids = self._take(lease, messages)
            # The messages as leased (a row may still hold the journal record); the
            # acceptance time of their rows is read when written.
            rows = [
                (r, m.tenant, m.message_id, kind_of(m.kind), m.body)
                for m, r in zip(messages, rowids, strict=True)
            ]
            # An outside text: nothing in it may make the write fail (and be kept for ever).
            self._unwritten.refused.append((time.time(), writable(reason), status, rows))
            self._unwritten.settled(lease.tenant, rowids)
            self._write_unwritten()

    def _write_unwritten(self) -> bool:
        """Write what ``_unwritten`` keeps, in one transaction (under ``_lock``); True when
        written. Never raises: a failure keeps it all there, reported (rarely), whatever
        the error, one the file cannot take now (a full disk, a lock) or one it refuses
        (a constraint, damage). A settlement is then counted and its sender's turn goes
        on; a lease is held in memory; upkeep still recovers and refreshes."""
        try:
            return self._unwritten.write(self._backlog)
        except sqlite3.Error as exc:  # not operational (a trigger, damage): kept
            self._unwritten.failed(exc)
            return False

    # -- looking -----------------------------------------------------------------------

    def backlog(self, tenant: str) -> int:
        """Messages of ``tenant`` this process may lease next (an estimate)."""
        freed = self._unwritten.freed.get(tenant)
        kept = self._kept.get(tenant)
        return (
            self._backlog.get(tenant, 0) + (len(freed) if freed else 0) + (len(kept) if kept else 0)
        )

    def tenants(self) -> list[str]:
        """Tenants with messages this process may lease next."""
        with self._lock:
            names = [t for t, n in self._backlog.items() if n > 0]
            if self._unwritten.freed or self._kept:
                names = list(dict.fromkeys([*names, *self._unwritten.freed, *self._kept]))
            return names

    @_named_errors
    def empty(self) -> bool:
        """True when the file holds no message to send (dead letters aside), but those
        this process settled and could not delete yet."""
        with self._lock:
            if not self._unwritten.gone:
                return self._db.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None
            return self._unwritten.nothing_else()

    def stats(self) -> SpoolStats:
        """Counts and size of the file as this process knows them; SpoolError naming the
        file when it cannot be read (a damaged file, say)."""
        with self._lock:
            return self._stats()

    def stats_now(self) -> SpoolStats | None:
        """:meth:`stats`, or None when it would wait: a write holds the spool (one waiting
        for another process's lock holds it up to the busy timeout, 30 s)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._stats()
        finally:
            self._lock.release()

    def _stats(self) -> SpoolStats:
        try:
            (counts,) = self._db.execute(
                "SELECT json_group_object(tenant, json_array(n, leased)) FROM "
                "(SELECT tenant, count(*) AS n, count(owner) AS leased FROM messages "
                "GROUP BY tenant)"
            ).fetchone()
            counts = self._unwritten.counted(counts)
            used = self._measure()
            kept = {tenant: len(rows) for tenant, rows in self._kept.items()}
        except sqlite3.Error as exc:
            raise spool_error(self.path, exc) from None
        rows: dict[str, list[int]] = orjson.loads(counts)
        for tenant, n in kept.items():  # leased in the file, queued here
            if tenant in rows:
                rows[tenant][1] -= n
        per_tenant = {tenant: n for tenant, (n, _) in rows.items()}
        return SpoolStats(
            sum(per_tenant.values()), used, sum(leased for _, leased in rows.values()), per_tenant
        )

    @_named_errors
    def mark_paused(self, tenant: str, reason: str | None) -> None:
        """Record (or clear, with None) that ``tenant`` is paused, for ``spool status``;
        written later when the file cannot be written now."""
        with self._lock:
            self._unwritten.paused[tenant] = None if reason is None else (reason, time.time())
            if reason is None:
                self._paused.discard(tenant)
                self._unkept.discard(tenant)
            else:  # another process, with a key that works, may send them meanwhile
                self._paused.add(tenant)
                self._free_kept(tenant)
            self._write_unwritten()

    def note_error(self, tenant: str, text: str, at: float, status: int | None) -> None:
        """Record ``tenant``'s last delivery error (key-free text, Unix time, HTTP status)
        for ``spool status``; written later when the file cannot be written now.

        Best effort, never raises: an error the file refuses otherwise (a damaged page, a
        constraint) is logged at ERROR (the same text at most every ``_REPORT_EVERY``
        seconds) and dropped, so it cannot fail this process's later writes."""
        with self._lock:
            self._unwritten.errors[tenant] = (writable(text), at, status)
            try:  # not _write_unwritten(): an error the file refuses is dropped, not kept
                self._unwritten.write(self._backlog)
            except sqlite3.Error as exc:
                self._unwritten.errors.pop(tenant, None)
                error = spool_error(self.path, exc)
            else:
                return
        self._report(SpoolError(f"{error}; the last delivery error of a tenant was not kept"))

    # -- upkeep --------------------------------------------------------------------------

    def maintain(self, force: bool = False) -> list[str]:
        """Replay dead processes' journals, free their leases, notice others' writes.

        Returns the tenants that have messages to send (for the dispatcher). A file or
        journal directory that cannot be used (damaged, not writable...) costs the round:
        one ERROR line naming the file and the reason (no traceback, the same line at most
        every ``_REPORT_EVERY`` seconds), and the next round tries again.
        """
        note = self._journal.take_note()
        if note is not None:
            log.info(
                "a journal write %s; journal writes let go of the GIL for the next %.0f s",
                note,
                HOLD_OFF,
                extra={"reason": "slow_journal_write"},
            )
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
        text = str(error)
        if not self._reports.allows(time.monotonic(), text):
            return
        log.error("%s", text, extra={"reason": "spool_error"})

    def _upkeep(self, force: bool) -> list[str]:
        with self._lock:  # what the file could not take before
            if self._unwritten.pending():
                self._write_unwritten()
        recovered = self._recovery.recover(self.put_many, self._report)
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

    # -- life --------------------------------------------------------------------------

    def close(self, *, ingested: bool = True) -> None:
        """Free this process's leases and stop; delete the journals when ``ingested``.

        What is queued stays in the file for the next start or another process.
        """
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                self._kept.clear()  # freed in the file below: no lease may take them now
                self._kept_bytes = 0
                self._unwritten.write_last(self._backlog)
            self._recovery.free_leases(self.owner)
            self._leases.clear()
        except sqlite3.Error as exc:  # pragma: no cover - the next start frees them
            log.error("could not free leases at close: %s", exc, extra={"reason": "spool_error"})
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
