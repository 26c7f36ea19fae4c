"""A spool in PostgreSQL that processes on many hosts share: the queue of the third engine.

Every host's senders lease batches from one table with ``SELECT ... FOR UPDATE SKIP
LOCKED``; a lease is this process's owner name plus an expiry (``lease_until``), so the
rows of a host that died (no ``flock`` across hosts) become leasable again once the lease
has expired, and are then sent again with the same ``messageId`` (Segment dedups). No
transaction is held open across an HTTP request: leasing and each settlement are one short
transaction each.

Schema: the tables live in their own schema (``selligent_segment`` by default), with a
version row; :func:`ensure_schema` creates it on first use and refuses a newer version with
a clear error. Credentials come from the URL, the environment (``PGPASSWORD``) or
``~/.pgpass``, as libpq reads them; they never reach a log line, an exception text or a
repr (:func:`redact`).

Guarantees (as the :class:`~selligent_segment.spool._protocol.Spool` protocol states): a
message leaves the table only acknowledged or as a dead letter; while this process's lease
is live the rows are nobody else's; settling never raises because the database cannot be
reached: the outcome is kept in memory, counted at once, and written by :meth:`maintain`
(or the next settlement) once the database answers again; until then an expired lease may
let another host send the same rows again (a documented resend).

Status: groundwork of issue 13. The spool is complete and tested against a real server;
the intake that puts ``emit`` into it (with a local journal while the database is away),
the transactional outbox, the relay command and the CLI's ``--spool postgresql://`` are not
built yet.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from selligent_segment._errors import ConfigurationError, SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool._protocol import Lease, SpoolStats

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "PostgresSpool",
    "ensure_schema",
    "is_postgres_url",
    "redact",
]

log = logging.getLogger("selligent_segment")

#: The schema the tables live in unless told otherwise.
DEFAULT_SCHEMA = "selligent_segment"
#: The version of the tables this code reads and writes.
SCHEMA_VERSION = 1
#: Seconds a lease stays this process's before another may take the rows over.
DEFAULT_LEASE_SECONDS = 60.0

_URL = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_KINDS = {kind.value: kind for kind in EventKind}

_TABLES = """
CREATE TABLE IF NOT EXISTS {s}.meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.messages (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    owner TEXT,
    lease_until TIMESTAMPTZ
);
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
"""


def is_postgres_url(spool: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` spool setting."""
    return isinstance(spool, str) and _URL.match(spool) is not None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and reprs)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            "spool",
            "a postgresql:// spool needs psycopg: pip install 'selligent-segment[postgres]'",
        ) from None
    return psycopg


def ensure_schema(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """Create the schema and its tables at :data:`SCHEMA_VERSION` if missing (under an
    advisory lock, so hosts starting together do it once); raise :class:`SpoolError` for a
    newer version written by a later release."""
    if not _NAME.match(schema):
        raise ConfigurationError("schema", f"{schema!r} is not a plain lower-case SQL name")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for statement in _TABLES.format(s=schema).split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute(f"SELECT version FROM {schema}.meta").fetchone()
        if row is None:
            conn.execute(f"INSERT INTO {schema}.meta (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise SpoolError(
                f"PostgreSQL spool schema {schema}: version {row[0]} was written by a newer "
                f"selligent-segment (this one reads version {SCHEMA_VERSION}); upgrade it"
            )


def _owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


@attrs.define
class _Held:
    """A live lease's row ids, by the identity of its messages."""

    rowids: dict[int, int]


class PostgresSpool:
    """A :class:`~selligent_segment.spool._protocol.Spool` in a PostgreSQL database,
    shared by any number of processes on any number of hosts.

    ``url`` is a libpq URL (``postgresql://user@host:port/db``; the password, if any, from
    the URL, ``PGPASSWORD`` or ``~/.pgpass``). ``max_bytes`` caps the bodies queued (the
    whole table, every host's rows), ``lease_seconds`` is how long a lease protects its rows.
    Every method is thread-safe; connections are kept in a small pool, one per concurrent
    caller.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_bytes: int = 1 << 30,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not is_postgres_url(url):
            raise ConfigurationError("spool", "expected a postgresql:// URL")
        if not lease_seconds > 0:
            raise ConfigurationError("lease_seconds", "must be above 0")
        self._psycopg = _psycopg()
        self._url = url
        self.schema = schema
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self.owner = owner or _owner_name()
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._unwritten: list[tuple[str, tuple[int, ...], str | None, int | None]] = []
        self._nbytes = 0
        self._nbytes_at = 0.0
        with self._connection() as conn:
            ensure_schema(conn, schema)

    def __repr__(self) -> str:
        return f"<PostgresSpool {redact(self._url)} schema={self.schema}>"

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode; a broken one is dropped, and a database
        error leaves as :class:`SpoolError` naming the server (never its password)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        psycopg = self._psycopg
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
                )
            yield conn
        except psycopg.Error as exc:
            if conn is not None and not conn.closed and conn.info.transaction_status != 0:
                conn.close()  # in a failed state: never pooled
            raise SpoolError(
                f"PostgreSQL spool {redact(self._url)}: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}"
            ) from None
        else:
            with self._lock:
                self._idle.append(conn)

    # -- the Spool protocol ---------------------------------------------------------------

    def has_room(self, nbytes: int) -> bool:
        """True when ``nbytes`` more fit under ``max_bytes`` (the table's size is read at
        most once a second)."""
        now = time.monotonic()
        if now - self._nbytes_at > 1.0:
            with self._connection() as conn:
                row = conn.execute(
                    f"SELECT coalesce(sum(length(body)), 0) FROM {self.schema}.messages"
                ).fetchone()
            self._nbytes = int(row[0]) if row else 0
            self._nbytes_at = now
        return self._nbytes + nbytes <= self.max_bytes

    def put_many(self, messages: Sequence[EncodedMessage]) -> None:
        """Append ``messages`` in one ``COPY`` (one transaction): all or none."""
        if not messages:
            return
        copy_sql = f"COPY {self.schema}.messages (tenant, message_id, kind, body) FROM STDIN"
        with (
            self._connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
            cursor.copy(copy_sql) as copy,
        ):
            for message in messages:
                copy.write_row(
                    (message.tenant, message.message_id, message.kind.value, message.body)
                )
        self._nbytes += sum(len(m.body) for m in messages)

    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        """Up to ``max_messages`` of ``tenant``'s oldest rows that nobody holds (or whose
        holder's lease expired), within ``max_bytes``; one short transaction."""
        self._write_unwritten()
        sql = f"""
            WITH picked AS (
                SELECT id FROM {self.schema}.messages
                WHERE tenant = %(tenant)s AND (owner IS NULL OR lease_until < now())
                ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            UPDATE {self.schema}.messages AS m
            SET owner = %(owner)s, lease_until = now() + make_interval(secs => %(secs)s)
            FROM picked WHERE m.id = picked.id
            RETURNING m.id, m.message_id, m.kind, m.body
        """
        params = {
            "tenant": tenant,
            "limit": max_messages,
            "owner": self.owner,
            "secs": self.lease_seconds,
        }
        with self._connection() as conn, conn.transaction():
            rows = sorted(conn.execute(sql, params).fetchall())
            taken: list[tuple[int, EncodedMessage]] = []
            size = 0
            for rowid, message_id, kind, body in rows:
                cost = len(body) + 1
                if taken and size + cost > max_bytes:
                    break
                taken.append((rowid, EncodedMessage(tenant, message_id, _KINDS[kind], bytes(body))))
                size += cost
            back = [rowid for rowid, *_ in rows[len(taken) :]]
            if back:
                conn.execute(
                    f"UPDATE {self.schema}.messages SET owner = NULL, lease_until = NULL "
                    "WHERE id = ANY(%s)",
                    (back,),
                )
        if not taken:
            return None
        lease = Lease(tenant, tuple(message for _, message in taken))
        with self._lock:
            self._held[lease.id] = _Held(
                {id(m): rowid for (rowid, _), m in zip(taken, lease.messages, strict=True)}
            )
        return lease

    def _rowids(self, lease: Lease, messages: Sequence[EncodedMessage]) -> tuple[int, ...]:
        with self._lock:
            held = self._held.get(lease.id)
            if held is None:
                raise ValueError(f"lease {lease.id} is not live")
            try:
                rowids = tuple(held.rowids.pop(id(m)) for m in messages)
            except KeyError:
                raise ValueError(f"a message of lease {lease.id} settled twice") from None
            if not held.rowids:
                del self._held[lease.id]
            return rowids

    def _settle(
        self, action: str, rowids: tuple[int, ...], reason: str | None, status: int | None
    ) -> None:
        s = self.schema
        with self._connection() as conn, conn.transaction():
            if action == "ack":
                conn.execute(
                    f"DELETE FROM {s}.messages WHERE id = ANY(%s) AND owner = %s",
                    (list(rowids), self.owner),
                )
            elif action == "release":
                conn.execute(
                    f"UPDATE {s}.messages SET owner = NULL, lease_until = NULL "
                    "WHERE id = ANY(%s) AND owner = %s",
                    (list(rowids), self.owner),
                )
            else:
                conn.execute(
                    f"""WITH gone AS (
                        DELETE FROM {s}.messages WHERE id = ANY(%s) AND owner = %s
                        RETURNING tenant, message_id, kind, body, accepted_at)
                    INSERT INTO {s}.dead_letters
                        (tenant, message_id, kind, body, accepted_at, reason, status)
                    SELECT tenant, message_id, kind, body, accepted_at, %s, %s FROM gone""",
                    (list(rowids), self.owner, reason, status),
                )

    def _settle_or_keep(
        self,
        action: str,
        rowids: tuple[int, ...],
        reason: str | None = None,
        status: int | None = None,
    ) -> None:
        try:
            self._settle(action, rowids, reason, status)
        except SpoolError as exc:
            with self._lock:
                self._unwritten.append((action, rowids, reason, status))
            log.error(
                "selligent-segment: settlement kept in memory until the database answers: %s", exc
            )

    def _write_unwritten(self) -> None:
        with self._lock:
            pending, self._unwritten = self._unwritten, []
        for index, (action, rowids, reason, status) in enumerate(pending):
            try:
                self._settle(action, rowids, reason, status)
            except SpoolError:
                with self._lock:
                    self._unwritten[:0] = pending[index:]
                raise

    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Delete ``messages``: Segment accepted them."""
        self._settle_or_keep("ack", self._rowids(lease, messages))

    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Give ``messages`` back to the queue, at their old place (ids keep the order)."""
        self._settle_or_keep("release", self._rowids(lease, messages))

    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        """Move ``messages`` to ``dead_letters`` with ``reason`` and ``status``."""
        self._settle_or_keep("reject", self._rowids(lease, messages), reason, status)

    def maintain(self) -> None:
        """Write the settlements kept while the database could not be reached."""
        self._write_unwritten()

    def empty(self) -> bool:
        """True when no row is queued or leased, by anyone."""
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT NOT EXISTS (SELECT 1 FROM {self.schema}.messages)"
            ).fetchone()
        return bool(row and row[0]) and not self._held

    def backlog(self, tenant: str) -> int:
        """Rows of ``tenant`` that a sender may lease now."""
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {self.schema}.messages "
                "WHERE tenant = %s AND (owner IS NULL OR lease_until < now())",
                (tenant,),
            ).fetchone()
        return int(row[0]) if row else 0

    def tenants(self) -> list[str]:
        """Tenants with rows a sender may lease now."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT tenant FROM {self.schema}.messages "
                "WHERE owner IS NULL OR lease_until < now()"
            ).fetchall()
        return sorted(row[0] for row in rows)

    def stats(self) -> SpoolStats:
        """One snapshot of the whole table (every host's rows)."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT tenant, count(*), coalesce(sum(length(body)), 0), "
                f"count(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= now()) "
                f"FROM {self.schema}.messages GROUP BY tenant"
            ).fetchall()
        return SpoolStats(
            messages=sum(r[1] for r in rows),
            nbytes=sum(int(r[2]) for r in rows),
            leased=sum(r[3] for r in rows),
            per_tenant={r[0]: r[1] for r in rows},
        )

    def dead_letters(self, tenant: str | None = None) -> list[tuple[str, str, str, int | None]]:
        """``(tenant, message_id, reason, status)`` of the dead letters, oldest first."""
        where = "WHERE tenant = %s" if tenant is not None else ""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT tenant, message_id, reason, status FROM {self.schema}.dead_letters "
                f"{where} ORDER BY id",
                (tenant,) if tenant is not None else (),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def close(self) -> None:
        """Give back this process's live leases (best effort) and close the connections."""
        with self._lock:
            held, self._held = self._held, {}
        rowids = tuple(r for h in held.values() for r in h.rowids.values())
        if rowids:
            try:
                self._settle("release", rowids, None, None)
            except SpoolError as exc:
                log.warning("selligent-segment: leases left to expire: %s", exc)
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
