"""What this process leased and settled that the spool file does not show yet, because
writing it failed (the disk is full, or another connection held the file locked past the
busy timeout), and writing it later.

It also keeps the acknowledgements the spool defers on purpose (``SqliteSpool.ack`` while
the encoder has records to move in), until the encoder's next insert, upkeep or close.

Guarantee: for this process what :class:`Unwritten` keeps is the truth at once (leasing,
counting, ``empty``); every later write of the spool but an acknowledgement it defers
writes it first, all of it in one transaction or none of it; a row is settled only if it
is still the row this process leased (same id *and* acceptance time). While writes fail,
a statement waits at most ``BUSY_TIMEOUT_WHILE_FAILING`` for a lock, and the ERROR line
saying so repeats at most every ``_LOG_EVERY`` seconds. The caller holds the spool's lock
around every method.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import orjson

from selligent_segment._mapping import EncodedMessage
from selligent_segment._throttle import Throttle
from selligent_segment.spool._schema import (
    BUSY_TIMEOUT,
    BUSY_TIMEOUT_WHILE_FAILING,
    disk_full,
    snapshot,
    transaction,
)
from selligent_segment.spool._statements import (
    DeadMessage,
    bury,
    execute_in_parts,
    ids,
    reject_sql,
)

__all__ = ["Refusal", "Unwritten"]

log = logging.getLogger("selligent_segment")

#: A refusal to keep as dead letters: (failed at, reason, status, rows for reject_sql).
Refusal = tuple[float, str, "int | None", list[tuple[int, str, str, str, bytes]]]
#: How often the ERROR line about a spool file that cannot be written may repeat.
_LOG_EVERY = 60.0


def _drop(rows_of: dict[str, set[int]], tenant: str, rowids: Iterable[int]) -> None:
    """Remove ``rowids`` from ``rows_of[tenant]`` (and the tenant once it has none)."""
    rows = rows_of.get(tenant)
    if rows is not None:
        rows.difference_update(rowids)
        if not rows:
            del rows_of[tenant]


@attrs.define
class Unwritten:
    """What this process settled that the file at ``path`` (open as ``db``) does not show
    yet. For this process it is the truth (leasing, counting, ``empty``); every later
    write of the spool (a settlement, a lease, upkeep) writes it first.
    """

    db: sqlite3.Connection
    path: Path
    owner: str
    #: Rows acknowledged, rejected or buried, to delete (their dead letters go first).
    gone: dict[str, set[int]] = attrs.Factory(dict)
    refused: list[Refusal] = attrs.Factory(list)
    buried: dict[int, DeadMessage] = attrs.Factory(dict)
    #: Released rows the file still shows leased by this process: leased again from here.
    freed: dict[str, dict[int, EncodedMessage]] = attrs.Factory(dict)
    #: ``paused`` marks to write: (reason, since), or None to clear the mark.
    paused: dict[str, tuple[str, float] | None] = attrs.Factory(dict)
    #: Each tenant's last delivery error to write: (text, at, status).
    errors: dict[str, tuple[str, float, int | None]] = attrs.Factory(dict)
    #: Rows leased in memory only (the lease could not be written): free in the file.
    held: dict[str, set[int]] = attrs.Factory(dict)
    #: The acceptance time of each row leased in memory, until its settlement is written.
    #: Another process may take such a row, delete it, and SQLite may give its id to a
    #: new row: a row is settled only if its id *and* acceptance time match.
    stamps: dict[int, float] = attrs.Factory(dict)
    failing: bool = False
    throttle: Throttle = attrs.Factory(lambda: Throttle(_LOG_EVERY))  # its ERROR line
    #: The busy timeout while writes succeed.
    patience: float = BUSY_TIMEOUT

    def pending(self) -> bool:
        """True when something waits to be written."""
        return bool(
            self.gone or self.freed or self.paused or self.refused or self.buried or self.errors
        )

    def hidden(self, tenant: str) -> set[int]:
        """Rows of ``tenant`` that a lease must not take from the file: this process
        holds them (leased in memory) or settled them already."""
        held, gone = self.held.get(tenant), self.gone.get(tenant)
        if held and gone:
            return held | gone
        return held or gone or set()

    def events(self) -> int:
        """Settled or released events whose settlement waits to be written."""
        return sum(map(len, self.gone.values())) + sum(map(len, self.freed.values()))

    def written(self) -> None:
        """Forget what was just written (rows leased in memory stay held)."""
        if self.stamps:
            for rowid in itertools.chain.from_iterable(self.gone.values()):
                self.stamps.pop(rowid, None)
        self.gone, self.refused, self.buried, self.freed, self.paused = {}, [], {}, {}, {}
        self.errors = {}

    def split(self, rowids: Iterable[int]) -> tuple[list[int], list[tuple[int, float]]]:
        """``rowids`` as those to settle by id alone and (id, acceptance time) pairs."""
        if not self.stamps:
            return list(rowids), []
        plain: list[int] = []
        checked: list[tuple[int, float]] = []
        for rowid in rowids:
            stamp = self.stamps.get(rowid)
            if stamp is None:
                plain.append(rowid)
            else:
                checked.append((rowid, stamp))
        return plain, checked

    # -- what this process leases and settles meanwhile ----------------------------------

    def hold(
        self,
        tenant: str,
        fresh: list[int],
        back: list[int],
        dead: dict[int, DeadMessage],
        stamps: dict[int, float],
    ) -> None:
        """Keep a lease in memory only: its ``fresh`` rows (free in the file) held, its
        rows taken ``back`` from ``freed``, its ``dead`` records to bury later; ``stamps``
        are the acceptance times of their rows."""
        self.stamps.update(stamps)
        if fresh:
            self.held.setdefault(tenant, set()).update(fresh)
        if back:  # the file shows them leased by this process: they are again
            freed = self.freed[tenant]
            for rowid in back:
                del freed[rowid]
            if not freed:
                del self.freed[tenant]
        if dead:
            self.buried.update(dead)
            self.gone.setdefault(tenant, set()).update(dead)

    def settled(self, tenant: str, rowids: list[int]) -> None:
        """Count ``rowids`` as gone from the queue (delivered or refused)."""
        if self.held:
            _drop(self.held, tenant, rowids)
        self.gone.setdefault(tenant, set()).update(rowids)

    def release(self, tenant: str, messages: Sequence[EncodedMessage], rowids: list[int]) -> int:
        """Free the rows ``rowids`` of ``messages`` for a later lease; returns how many
        were leased in memory only (the file shows them free already)."""
        held = self.held.get(tenant)
        in_memory = held.intersection(rowids) if held else set()
        if in_memory:
            _drop(self.held, tenant, in_memory)
            for rowid in in_memory:
                self.stamps.pop(rowid, None)
        freed = self.freed.setdefault(tenant, {})
        for message, rowid in zip(messages, rowids, strict=True):
            if rowid not in in_memory:
                freed[rowid] = message
        if not freed:
            del self.freed[tenant]
        return len(in_memory)

    # -- what this process reads -----------------------------------------------------------

    def nothing_else(self) -> bool:
        """True when the file holds no message but those this process settled (``gone``)
        and could not delete yet; read in one snapshot."""
        gone = self.gone
        _, checked = self.split(itertools.chain.from_iterable(gone.values()))
        with snapshot(self.db) as db:
            left = db.execute(
                "SELECT 1 FROM messages WHERE id NOT IN (SELECT value FROM json_each(?)) LIMIT 1",
                (ids(itertools.chain.from_iterable(gone.values())),),
            ).fetchone()
            if left is None and checked:  # the same ids, but still the same rows?
                stamps = dict(checked)
                left = next(
                    (
                        rowid
                        for rowid, accepted_at in db.execute(
                            "SELECT id, accepted_at FROM messages "
                            "WHERE id IN (SELECT value FROM json_each(?))",
                            (ids(stamps),),
                        )
                        if stamps[rowid] != accepted_at
                    ),
                    None,
                )
        return left is None

    def counted(self, counts: str) -> str | bytes:
        """``stats``' counts (JSON ``{tenant: [messages, leased]}`` read from the file) as
        this process knows them: without the rows it settled, with the rows it holds in
        memory as leased and those it released as not."""
        if not (self.gone or self.held or self.freed):
            return counts
        gone = set(itertools.chain.from_iterable(self.gone.values()))
        held = set(itertools.chain.from_iterable(self.held.values()))
        freed = set(itertools.chain.from_iterable(self.freed.values()))
        stamps = self.stamps
        rows: dict[str, list[int]] = orjson.loads(counts)
        for rowid, tenant, leased, accepted_at in self.db.execute(
            "SELECT id, tenant, owner IS NOT NULL, accepted_at FROM messages "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (ids(gone | held | freed),),
        ):
            entry = rows.get(tenant)
            if entry is None or stamps.get(rowid, accepted_at) != accepted_at:
                continue  # not the row this process knows (another process changed it)
            if rowid in gone:
                entry[0] -= 1
                entry[1] -= leased
            elif rowid in held:
                entry[1] += 1 - leased
            else:
                entry[1] -= leased
        return orjson.dumps({tenant: entry for tenant, entry in rows.items() if entry[0]})

    # -- writing it --------------------------------------------------------------------------

    def write(self, backlog: dict[str, int]) -> bool:
        """Write everything kept here, in one transaction; the rows it frees count in
        ``backlog`` (the spool's, per tenant).

        True when written; on a failure it is all kept, and the log says so (rarely)."""
        try:
            with transaction(self.db) as db:
                self.write_in(db)
        except sqlite3.OperationalError as exc:
            self.failed(exc)
            return False
        self.committed(backlog)
        return True

    def write_in(self, db: sqlite3.Connection) -> None:
        """The statements of :meth:`write`, in the transaction ``db`` has open; once it is
        committed, :meth:`committed` (rolled back: nothing to do, all is still kept)."""
        if self.buried:
            bury(db, self.buried, self.stamps)
        # One statement per 1,024 messages, before their rows go (acceptance time).
        for failed_at, reason, status, rows in self.refused:
            execute_in_parts(db, reject_sql, (failed_at, reason, status), rows)
        if self.gone:
            plain, checked = self.split(itertools.chain.from_iterable(self.gone.values()))
            db.execute(
                "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))",
                (ids(plain),),
            )
            db.executemany("DELETE FROM messages WHERE id = ? AND accepted_at = ?", checked)
        if self.freed:
            db.execute(
                "UPDATE messages SET owner = NULL "
                "WHERE owner = ? AND id IN (SELECT value FROM json_each(?))",
                (self.owner, ids(itertools.chain.from_iterable(self.freed.values()))),
            )
        for tenant, mark in self.paused.items():
            if mark is None:
                db.execute("DELETE FROM paused WHERE tenant = ?", (tenant,))
            else:
                db.execute(
                    "INSERT INTO paused (tenant, reason, since) VALUES (?, ?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET reason = excluded.reason",
                    (tenant, *mark),
                )
        if self.errors:
            db.executemany(
                "INSERT INTO last_errors (tenant, text, at, status) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET text = excluded.text, "
                "at = excluded.at, status = excluded.status",
                [(tenant, *error) for tenant, error in self.errors.items()],
            )

    def committed(self, backlog: dict[str, int]) -> None:
        """After the commit of :meth:`write_in`'s statements: forget what they wrote; the
        rows they freed count in ``backlog``."""
        for tenant, freed in self.freed.items():  # free in the file now
            backlog[tenant] = backlog.get(tenant, 0) + len(freed)
        self.written()
        if self.failing:
            self.failing = False
            self._busy_timeout(self.patience)
            log.warning(
                "the spool file %s can be written again; what was kept in memory is written",
                self.path,
                extra={"reason": "spool_writable"},
            )

    def write_last(self, backlog: dict[str, int]) -> None:
        """At close: a last try; what still cannot be written is sent again later."""
        if self.pending() and not self.write(backlog):
            log.warning(
                "the outcome of %d events could not be written to "
                "the spool file %s; the next process to use it sends them again (same "
                "messageId)",
                self.events(),
                self.path,
                extra={"reason": "spool_unwritable", "count": self.events()},
            )

    def failed(self, exc: sqlite3.Error) -> None:
        """After a write that failed: no transaction left open, and an ERROR line (no
        traceback) at most every ``_LOG_EVERY`` seconds."""
        if self.db.in_transaction:  # a failed COMMIT may leave it open
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        if not self.failing:
            with contextlib.suppress(sqlite3.Error):
                (ms,) = self.db.execute("PRAGMA busy_timeout").fetchone()
                self.patience = int(ms) / 1000
            self._busy_timeout(min(self.patience, BUSY_TIMEOUT_WHILE_FAILING))
        self.failing = True
        if not self.throttle.allows(time.monotonic()):
            return
        log.error(
            "spool file %s: %s; delivery goes on: what this process "
            "leases and settles meanwhile is kept in memory and written once the file can "
            "be written (if it stops first, the next process sends those events again, "
            "same messageId)",
            self.path,
            "the disk is full" if disk_full(exc) else f"cannot write ({exc})",
            extra={"reason": "disk_full" if disk_full(exc) else "spool_unwritable"},
        )

    def _busy_timeout(self, seconds: float) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
