"""Looking after a spool file: its status and its dead letters, from Python or the CLI.

:class:`SpoolFile` opens an existing spool file next to running emitters (SQLite's
locking keeps them consistent); what it requeues is picked up by running emitters within
about two seconds, or by the next start.

Guarantee: :meth:`SpoolFile.requeue` and :meth:`SpoolFile.purge` each run in one
transaction; a file this process may only read is opened read-only (status and dead
letters can still be read); every SQLite error is a :class:`~selligent_segment.SpoolError`
naming the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from selligent_segment._context import ClosedOnExit
from selligent_segment._errors import SpoolError
from selligent_segment.delivery._stats import LastError
from selligent_segment.spool._journal import live_owners
from selligent_segment.spool._schema import (
    ForkSafe,
    has_table,
    journal_dir,
    open_db,
    spool_error,
    spool_path,
    transaction,
    unwritable,
)

__all__ = ["DeadLetter", "SpoolFile", "SpoolStatus", "TenantBacklog"]


@attrs.frozen
class DeadLetter:
    """A message Segment refused for good (or could never be sent), kept with why.

    ``reason`` starts with a code: ``rejected`` (400/413/422), ``retries_exhausted``,
    ``too_large`` (``body`` then holds the record's fields, not a message),
    ``unreadable journal record``, or ``unreadable: damaged journal bytes at START..END
    in FILE`` (``body`` holds those raw bytes, which may hold records); ``status`` is the
    HTTP status when there was one.
    """

    id: int
    tenant: str
    message_id: str
    kind: str
    reason: str
    status: int | None
    accepted_at: float
    failed_at: float
    body: bytes = attrs.field(repr=False)

    @property
    def requeueable(self) -> bool:
        """True when ``body`` is a whole message that can be sent again."""
        return bool(self.message_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the body decoded as JSON)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "message_id": self.message_id,
            "kind": self.kind,
            "reason": self.reason,
            "status": self.status,
            "accepted_at": self.accepted_at,
            "failed_at": self.failed_at,
            "body": self.body.decode("utf-8", "replace"),
        }


@attrs.frozen
class TenantBacklog:
    """One tenant's share of a spool file. ``oldest_age`` is in seconds (None: empty);
    ``last_error`` is the last delivery error any process using the file recorded for the
    tenant (never a write key), kept after later successes: its ``at`` says when. A tenant
    is listed for what it has queued, leased, dead or paused, never for an old error alone."""

    tenant: str
    queued: int
    leased: int
    dead_letters: int
    oldest_age: float | None
    paused: str | None
    last_error: LastError | None = None


@attrs.frozen
class SpoolStatus:
    """A snapshot of a spool file: per-tenant backlog, sizes, live processes.

    ``file_bytes`` counts the database, its WAL and the journals; ``journal_bytes`` the
    journals alone (accepted events not yet moved into the database, or left by a
    stopped process until the next start replays them); ``processes`` the live emitters.
    """

    path: str
    file_bytes: int
    journal_bytes: int
    processes: int
    tenants: tuple[TenantBacklog, ...]
    #: ``file`` (a spool file) or ``postgresql`` (then ``path`` is the URL without its
    #: password, ``file_bytes`` the schema's tables on disk, ``journal_bytes`` 0 and
    #: ``processes`` the connected emitters and relays of every host).
    engine: str = "file"

    @property
    def queued(self) -> int:
        """Messages waiting to be sent, leased ones included."""
        return sum(t.queued for t in self.tenants)

    @property
    def dead_letters(self) -> int:
        """Dead letters kept in the file."""
        return sum(t.dead_letters for t in self.tenants)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "path": self.path,
            "engine": self.engine,
            "file_bytes": self.file_bytes,
            "journal_bytes": self.journal_bytes,
            "processes": self.processes,
            "queued": self.queued,
            "dead_letters": self.dead_letters,
            "tenants": [attrs.asdict(t) for t in self.tenants],
        }


def _where(tenant: str | None, reason: str | None, ids: list[int] | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        clauses.append("tenant = ?")
        params.append(tenant)
    if reason is not None:
        clauses.append("reason LIKE ? ESCAPE '\\'")
        escaped = reason.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(escaped + "%")
    if ids is not None:
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError("ids: expected integers (dead-letter ids)")
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(str(list(ids)))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class SpoolFile(ForkSafe, ClosedOnExit):
    """An existing spool file, opened for inspection and dead-letter handling.

    Raises SpoolError when there is no spool at ``spool`` or it is not one (the file is
    then left untouched). Safe to use while emitters run on the same file, from several
    threads, and in a process forked after it was opened (which gets its own connection).
    A file this process may read but not write is opened read-only (``read_only`` says
    why): status and dead letters can be read, and :meth:`requeue` and :meth:`purge`
    raise SpoolError saying why. Every SQLite error is a SpoolError naming the file.
    """

    def __init__(self, spool: str | os.PathLike[str]) -> None:
        self.path: Path = spool_path(spool)
        #: Why this process may not write the file (None: it may).
        self.read_only: str | None = unwritable(self.path) if self.path.exists() else None
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        with self._lock:  # held over a fork from the first statement (see ForkSafe)
            self._guard_over_fork()
            self._db: sqlite3.Connection = self._open()

    def _open(self) -> sqlite3.Connection:
        return open_db(self.path, create=False, read_only=self.read_only is not None)

    @contextlib.contextmanager
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock held over fork; a forked child opens its own.
        SQLite errors become SpoolError naming the file and what is wrong with it."""
        if write and self.read_only is not None:
            raise SpoolError(f"{self.path}: cannot write the spool file: {self.read_only}")
        with self._lock:
            if self._closed:
                raise SpoolError(f"{self.path}: this SpoolFile is closed")
            if self._pid != os.getpid():
                self._abandon_db(self._db)
                self._db = self._open()
                self._pid = os.getpid()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise spool_error(self.path, exc) from None

    def __repr__(self) -> str:
        return f"<SpoolFile {str(self.path)!r}>"

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._closed = True
            if self._pid == os.getpid():
                self._db.close()
            else:  # a forked child: closed with every inherited connection
                self._abandon_db(self._db)

    def status(self) -> SpoolStatus:
        """Backlog per tenant (queued, leased, dead letters, oldest age, paused), sizes."""
        now = time.time()
        tenants: dict[str, dict[str, Any]] = {}

        def entry(tenant: str) -> dict[str, Any]:
            return tenants.setdefault(
                tenant,
                {
                    "queued": 0,
                    "leased": 0,
                    "dead_letters": 0,
                    "oldest": None,
                    "paused": None,
                    "error": None,
                },
            )

        with self._connection() as db:
            for tenant, queued, leased, oldest in db.execute(
                "SELECT tenant, count(*), count(owner), min(accepted_at) FROM messages "
                "GROUP BY tenant"
            ):
                e = entry(tenant)
                e.update(queued=queued, leased=leased, oldest=oldest)
            for tenant, dead in db.execute(
                "SELECT tenant, count(*) FROM dead_letters GROUP BY tenant"
            ):
                entry(tenant)["dead_letters"] = dead
            for tenant, reason in db.execute("SELECT tenant, reason FROM paused"):
                entry(tenant)["paused"] = reason
            if has_table(db, "last_errors"):  # a file an older version made may lack it
                for tenant, text, at, status in db.execute(
                    "SELECT tenant, text, at, status FROM last_errors"
                ):
                    if tenant in tenants:  # only tenants with something to show
                        tenants[tenant]["error"] = LastError(text, at, status)
        rows = tuple(
            TenantBacklog(
                tenant,
                e["queued"],
                e["leased"],
                e["dead_letters"],
                None if e["oldest"] is None else max(0.0, now - e["oldest"]),
                e["paused"],
                e["error"],
            )
            for tenant, e in sorted(tenants.items())
        )
        journals = journal_dir(self.path)
        journal_bytes = sum(_size(p) for p in journals.glob("*.journal"))
        processes = live_owners(journals)
        file_bytes = sum(_size(Path(f"{self.path}{s}")) for s in ("", "-wal")) + journal_bytes
        return SpoolStatus(str(self.path), file_bytes, journal_bytes, processes, rows)

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (free pages, the WAL and the journals
        aside): the measure an Emitter's ``max_spool_bytes`` caps. Reads nothing else."""
        with self._connection() as db:
            (used,) = db.execute(
                "SELECT (page_count - freelist_count) * page_size "
                "FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
            ).fetchone()
        return int(used)

    def since(self, at: float) -> dict[str, tuple[int, int, int]]:
        """Per tenant with any: ``(queued, dead, dead_before)``: events queued (leased
        ones included) and dead letters, both accepted (put in the file) at or after
        ``at`` (Unix time), and dead letters accepted before ``at`` that failed at or
        after it. A run that noted the time before emitting finds its own events
        among the first two (with those other processes accepted since)."""
        counts: dict[str, list[int]] = {}
        with self._connection() as db:
            for column, sql in enumerate(
                (
                    "SELECT tenant, count(*) FROM messages WHERE accepted_at >= ?1 GROUP BY tenant",
                    "SELECT tenant, count(*) FROM dead_letters WHERE accepted_at >= ?1 "
                    "GROUP BY tenant",
                    "SELECT tenant, count(*) FROM dead_letters WHERE accepted_at < ?1 "
                    "AND failed_at >= ?1 GROUP BY tenant",
                )
            ):
                for tenant, n in db.execute(sql, (at,)):
                    counts.setdefault(tenant, [0, 0, 0])[column] = n
        return {tenant: (n[0], n[1], n[2]) for tenant, n in sorted(counts.items())}

    def check(self) -> None:
        """Read every page of the file (SQLite's ``quick_check``); SpoolError naming the
        file when it is damaged. Reads the whole file: seconds for a large backlog."""
        with self._connection() as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            detail = "; ".join(str(p) for p in problems)
            raise SpoolError(f"{self.path}: the spool file is corrupt ({detail}); left untouched")

    def dead_letters(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first; ``reason`` matches the start of the reason."""
        where, params = _where(tenant, reason, None)
        sql = (
            "SELECT id, tenant, message_id, kind, reason, status, accepted_at, failed_at, body "
            "FROM dead_letters" + where + " ORDER BY id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._connection() as db:
            return [DeadLetter(*row) for row in db.execute(sql, params)]

    def requeue(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Put matching dead letters back in their tenants' queues (with the same
        messageId); returns how many. Those that are not whole messages stay."""
        where, params = _where(tenant, reason, ids)
        where += (" AND " if where else " WHERE ") + "message_id != ''"
        with self._connection(write=True) as conn, transaction(conn) as db:
            db.execute(
                "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) "  # noqa: S608
                "SELECT tenant, message_id, kind, body, accepted_at FROM dead_letters"
                + where
                + " ORDER BY id",
                params,
            )
            return db.execute("DELETE FROM dead_letters" + where, params).rowcount  # noqa: S608

    def purge(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Delete matching dead letters for good; returns how many."""
        where, params = _where(tenant, reason, ids)
        with self._connection(write=True) as conn, transaction(conn) as db:
            return db.execute("DELETE FROM dead_letters" + where, params).rowcount  # noqa: S608


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
