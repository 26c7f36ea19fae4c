"""The operators' view of a PostgreSQL spool (``spool status``, ``dead-letters``,
``flush`` and ``spool init`` with ``--spool postgresql://...``): the same answers as a
spool file's :class:`~selligent_segment.spool._file.SpoolFile`, read from the shared
tables, for every host's rows.

Guarantees: opening never creates anything (a missing schema is a SpoolError saying how
to create it: ``spool init``); a schema written by a newer release is refused; requeue and
purge each run in one transaction, next to running relays (a requeued row is leased like
any other, with ``SKIP LOCKED``); ages are measured by the database's clock, so hosts'
clocks never skew them; the password never appears in a status, an error or a repr.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from selligent_segment._context import ClosedOnExit
from selligent_segment._errors import SpoolError
from selligent_segment.spool._file import DeadLetter, SpoolStatus, TenantBacklog
from selligent_segment.spool._postgres import (
    APPLICATION,
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    check_schema_name,
    connect,
    database_error,
    ensure_schema,
    newer_schema,
    redact,
    schema_version,
    split_options,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresView", "init_postgres"]

_DEAD_COLUMNS = (
    "id, tenant, message_id, kind, reason, status, extract(epoch FROM accepted_at)::float8, "
    "extract(epoch FROM failed_at)::float8, body"
)


def _schema_of(url: str) -> str:
    _, options = split_options(url)
    return check_schema_name(options.get("spool_schema", DEFAULT_SCHEMA))


def _where(tenant: str | None, reason: str | None, ids: list[int] | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        clauses.append("tenant = %s")
        params.append(tenant)
    if reason is not None:
        clauses.append("starts_with(reason, %s)")
        params.append(reason)
    if ids is not None:
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError("ids: expected integers (dead-letter ids)")
        clauses.append("id = ANY(%s::bigint[])")
        params.append(list(ids))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


#: Connections a forked child inherited: kept referenced, never closed there.
_inherited: list[psycopg.Connection[Any]] = []


class PostgresView(ClosedOnExit):
    """An existing PostgreSQL spool (its schema: ``?spool_schema=``, default
    ``selligent_segment``), opened for inspection and dead-letter handling; one connection,
    used under a lock; a process forked after it was opened gets its own connection.
    Raises SpoolError when the database cannot be reached, holds no
    spool in that schema, or holds one written by a newer release."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.schema = _schema_of(url)
        #: The URL without its password: what statuses and errors show.
        self.path = redact(url)
        self._lock = threading.Lock()
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = self._connect()
        self._pid = os.getpid()
        try:
            version = self._run(lambda conn: schema_version(conn, self.schema))
        except SpoolError:
            self.close()
            raise
        if version is None:
            self.close()
            raise SpoolError(
                f"{self.path}: no selligent-segment spool in schema {self.schema} "
                "(create it with: selligent-segment spool init --spool URL)"
            )
        if version > SCHEMA_VERSION:
            self.close()
            raise newer_schema(self.schema, version)
        #: The version of the tables found (an older one is read as it is, not migrated).
        self.version: int = version

    def __repr__(self) -> str:
        return f"<PostgresView {self.path} schema={self.schema}>"

    def _connect(self) -> psycopg.Connection[Any]:
        return connect(self.url, connect_timeout=self._connect_timeout, role="cli")

    def close(self) -> None:
        """Close the connection (idempotent); in a process forked after it was opened,
        leave the inherited one to the parent (closing it would end the parent's session)."""
        with self._lock:
            conn, self._conn = self._conn, None
            inherited = self._pid != os.getpid()
        if conn is not None and inherited:
            _inherited.append(conn)
        elif conn is not None:
            conn.close()

    def _run(self, work: Any, *, transaction: bool = False) -> Any:
        import psycopg

        with self._lock:
            conn = self._conn
            if conn is None:
                raise SpoolError(f"{self.path}: this view is closed")
            if self._pid != os.getpid():  # a forked child: its own connection, as SpoolFile
                _inherited.append(conn)
                conn = self._conn = self._connect()
                self._pid = os.getpid()
            try:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:
                raise database_error(self.url, exc) from None

    def status(self) -> SpoolStatus:
        """Backlog per tenant over every host's rows: queued (leased included), leased
        (a live lease), dead letters, the age of the event at the head of its queue (the
        next one sent, by the database's clock), paused and why; the schema's size on
        disk; the live processes (connections named ``selligent-segment SCHEMA PID.TAG@HOST``:
        emitters and relays, on any host).

        Without reading the queue: the counts come from ``queue_counts`` and the index of
        leased rows (``SCHEMA.queue_totals()``), each tenant's head from one descent of the
        ``(tenant, id)`` index. A version 1 schema (not migrated yet: ``spool init``) is
        counted with one scan of the queue, as before."""
        s = self.schema
        if self.version >= 2:
            backlog = (
                "SELECT t.tenant, t.queued, t.leased, "
                "greatest(0, extract(epoch FROM now() - h.accepted_at))::float8 "
                f"FROM {s}.queue_totals() AS t LEFT JOIN LATERAL ("
                f"SELECT m.accepted_at FROM {s}.messages m WHERE m.tenant = t.tenant "
                "ORDER BY m.id LIMIT 1) AS h ON true"
            )
        else:
            backlog = (
                "SELECT tenant, count(*), "
                "count(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= now()), "
                "greatest(0, extract(epoch FROM now() - min(accepted_at)))::float8 "
                f"FROM {s}.messages GROUP BY tenant"
            )

        def read(conn: psycopg.Connection[Any]) -> SpoolStatus:
            tenants: dict[str, dict[str, Any]] = {}

            def entry(tenant: str) -> dict[str, Any]:
                return tenants.setdefault(
                    tenant,
                    {"queued": 0, "leased": 0, "dead_letters": 0, "age": None, "paused": None},
                )

            for tenant, queued, leased, age in conn.execute(backlog):
                entry(tenant).update(queued=queued, leased=leased, age=age)
            for tenant, dead in conn.execute(
                f"SELECT tenant, count(*) FROM {s}.dead_letters GROUP BY tenant"
            ):
                entry(tenant)["dead_letters"] = dead
            for tenant, reason in conn.execute(f"SELECT tenant, reason FROM {s}.paused"):
                entry(tenant)["paused"] = reason
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (s,),
            ).fetchone()
            processes = conn.execute(
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND split_part(application_name, ' ', 1) = %s "
                "AND split_part(application_name, ' ', 2) = %s",
                (APPLICATION, s),
            ).fetchone()
            rows = tuple(
                TenantBacklog(t, e["queued"], e["leased"], e["dead_letters"], e["age"], e["paused"])
                for t, e in sorted(tenants.items())
            )
            return SpoolStatus(
                self.path,
                int(size[0]) if size else 0,
                0,
                int(processes[0]) if processes else 0,
                rows,
                engine="postgresql",
            )

        status: SpoolStatus = self._run(read)
        return status

    def used_bytes(self) -> int:
        """Bytes of the bodies queued, every host's rows: the measure an Emitter's
        ``max_spool_bytes`` caps (from ``queue_counts``, no row of the queue read; a
        version 1 schema, not migrated yet, with one scan of the queue)."""
        s = self.schema
        sql = (
            f"SELECT coalesce(sum(nbytes), 0) FROM {s}.queue_counts"
            if self.version >= 2
            else f"SELECT coalesce(sum(length(body)), 0) FROM {s}.messages"
        )
        row = self._run(lambda conn: conn.execute(sql).fetchone())
        return int(row[0]) if row else 0

    def now(self) -> float:
        """The database's clock now (Unix time): what it stamps each row's ``accepted_at``
        and ``failed_at`` with, so the mark to give :meth:`since` (a host's clock may run
        ahead of it, or behind)."""
        row = self._run(
            lambda conn: conn.execute(
                "SELECT extract(epoch FROM clock_timestamp())::float8"
            ).fetchone()
        )
        return float(row[0])

    def since(self, at: float) -> dict[str, tuple[int, int, int]]:
        """Per tenant with any: ``(queued, dead, dead_before)`` (see
        :meth:`SpoolView.since <selligent_segment.spool._view.SpoolView.since>`), over
        every host's rows. The rows are stamped by the database's clock: ``at`` must be
        read from it too (:meth:`now`), not from this host's."""
        s = self.schema
        queries = (
            f"SELECT tenant, count(*) FROM {s}.messages "
            "WHERE accepted_at >= to_timestamp(%s) GROUP BY tenant",
            f"SELECT tenant, count(*) FROM {s}.dead_letters "
            "WHERE accepted_at >= to_timestamp(%s) GROUP BY tenant",
            f"SELECT tenant, count(*) FROM {s}.dead_letters WHERE accepted_at < "
            "to_timestamp(%s) AND failed_at >= to_timestamp(%s) GROUP BY tenant",
        )

        def read(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
            counts: dict[str, list[int]] = {}
            for column, sql in enumerate(queries):
                params = (at,) * sql.count("%s")
                for tenant, n in conn.execute(sql, params):
                    counts.setdefault(tenant, [0, 0, 0])[column] = int(n)
            return {t: (n[0], n[1], n[2]) for t, n in sorted(counts.items())}

        result: dict[str, tuple[int, int, int]] = self._run(read)
        return result

    def check(self) -> None:
        """Raise SpoolError when this user may not write the queue (dead-letter handling
        and delivery would fail); the database keeps its own pages checked."""
        s = self.schema
        row = self._run(
            lambda conn: conn.execute(
                "SELECT has_table_privilege(%s, 'INSERT, DELETE, UPDATE') "
                "AND has_table_privilege(%s, 'INSERT, DELETE')",
                (f"{s}.messages", f"{s}.dead_letters"),
            ).fetchone()
        )
        if not (row and row[0]):
            raise SpoolError(f"{self.path}: this user may not write the spool tables in {s}")

    def dead_letters(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters of every host, oldest first; ``reason`` matches its start."""
        where, params = _where(tenant, reason, None)
        sql = f"SELECT {_DEAD_COLUMNS} FROM {self.schema}.dead_letters{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [
            DeadLetter(
                id=i,
                tenant=t,
                message_id=m,
                kind=k,
                reason=r,
                status=st,
                accepted_at=a,
                failed_at=f,
                body=bytes(b),
            )
            for i, t, m, k, r, st, a, f, b in rows
        ]

    def requeue(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Move matching dead letters back into the queue (same messageId, their old
        order, one transaction); relays on any host lease them at their next poll."""
        s = self.schema
        where, params = _where(tenant, reason, ids)
        where += (" AND " if where else " WHERE ") + "message_id <> ''"
        sql = f"""WITH gone AS (
                DELETE FROM {s}.dead_letters{where}
                RETURNING id, tenant, message_id, kind, body, accepted_at)
            INSERT INTO {s}.messages (tenant, message_id, kind, body, accepted_at)
            SELECT tenant, message_id, kind, body, accepted_at FROM gone ORDER BY id"""
        count: int = self._run(lambda conn: conn.execute(sql, params).rowcount, transaction=True)
        return count

    def purge(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Delete matching dead letters for good (one transaction); how many."""
        where, params = _where(tenant, reason, ids)
        sql = f"DELETE FROM {self.schema}.dead_letters{where}"
        count: int = self._run(lambda conn: conn.execute(sql, params).rowcount, transaction=True)
        return count


def init_postgres(url: str) -> str:
    """Create the spool's schema and tables (and the ``enqueue`` function) at this
    release's version, or migrate an older one; one line saying what was done. SpoolError
    for a newer version (left as it is) or a database that cannot be reached."""
    import psycopg

    schema = _schema_of(url)
    conn = connect(url, role="cli")
    try:
        before = ensure_schema(conn, schema)
    except psycopg.Error as exc:
        raise database_error(url, exc) from None
    finally:
        conn.close()
    if before is None:
        done = f"created schema {schema} at version {SCHEMA_VERSION}"
    elif before < SCHEMA_VERSION:
        done = f"migrated schema {schema} from version {before} to {SCHEMA_VERSION}"
    else:
        done = f"schema {schema} is at version {SCHEMA_VERSION} already: nothing to do"
    return f"{redact(url)}: {done}"
