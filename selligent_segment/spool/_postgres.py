"""A spool in PostgreSQL that processes on many hosts share: the queue of the third engine.

Every host's senders lease batches from one table with ``SELECT ... FOR UPDATE SKIP
LOCKED``; a lease is this process's owner name and the lease's number (a late settlement
of an expired lease never touches a newer one's rows) plus an expiry (``lease_until``), so the
rows of a host that died (no ``flock`` across hosts) become leasable again once the lease
has expired, and are then sent again with the same ``messageId`` (Segment dedups). No
transaction is held open across an HTTP request: leasing and each settlement are one short
transaction each.

Schema: the tables live in their own schema (``selligent_segment`` by default), with a
version row; :func:`ensure_schema` creates it on first use (or migrates an older version)
and refuses a newer version with a clear error. The database keeps the queue's counts per
tenant itself (``queue_counts``, version 2), so :meth:`PostgresSpool.stats` never reads
the queue. Credentials come from the URL, the environment (``PGPASSWORD``) or
``~/.pgpass``, as libpq reads them; they never reach a log line, an exception text or a
repr (:func:`redact`).

Guarantees (as the :class:`~selligent_segment.spool._protocol.Spool` protocol states): a
message leaves the table only acknowledged or as a dead letter; while this process's lease
is live the rows are nobody else's; settling never raises: while the database cannot be
reached (:class:`Unreachable`) the outcome is kept in memory, counted at once, and written
by :meth:`maintain` (or the next lease) once the database answers again; until then an
expired lease may let another host send the same rows again (a documented resend). A
settlement the database refuses for its data is never kept (it would fail again, ahead of
every later one): a reject is written with a plain reason instead, and what still fails
is logged at ERROR, its rows left in the queue to be leased again once their lease
expires. Every text from outside is written as ``text`` can hold it (:func:`pg_text`).

Rows hold either a Segment message or, written by an emitter, its compact record (an
empty ``message_id``), which :meth:`PostgresSpool.lease` turns into the message
(:mod:`._postgres_record`); a record that cannot be read becomes a dead letter.

Fast paths: concurrent ``put_rows`` calls of a few rows (every ``emit``) share one
statement and commit (:class:`_GroupCommit`), larger ones are one autocommit ``COPY`` into
the current partition; the queue's
bookkeeping (:meth:`PostgresSpool.has_room`, :meth:`PostgresSpool.tenants`) never reads the
table whole; a :class:`Listener` wakes the senders on another process's ``NOTIFY``, polling
staying the fallback.

Non-Python services queue events with the SQL function ``SCHEMA.enqueue(tenant, message,
kind)`` created with the schema (it validates, then inserts; see ``docs/scaling.md``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from selligent_segment._errors import ConfigurationError, InvalidEvent, SpoolError, shown
from selligent_segment._mapping import EncodedMessage
from selligent_segment._process_life import in_library_thread
from selligent_segment._record import EventKind
from selligent_segment.spool._postgres_record import QueueRow, UnreadableRecord, decode
from selligent_segment.spool._protocol import Lease, OnBuried, SpoolStats, tell_buried
from selligent_segment.spool._statements import kind_of

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "APPLICATION",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "Listener",
    "PostgresSpool",
    "QueueRow",
    "Unreachable",
    "check_schema_name",
    "compact_counts",
    "connect",
    "database_error",
    "ensure_schema",
    "is_postgres_url",
    "newer_schema",
    "pg_text",
    "redact",
    "schema_version",
    "split_options",
    "without_passwords",
]

log = logging.getLogger("selligent_segment")

#: The schema the tables live in unless told otherwise.
DEFAULT_SCHEMA = "selligent_segment"
#: The version of the tables this code reads and writes (2: ``queue_counts``, see
#: :data:`_QUEUE_COUNTS`).
SCHEMA_VERSION = 2
#: The start of ``application_name`` on every connection this package opens.
APPLICATION = "selligent-segment"
#: Seconds a lease stays this process's before another may take the rows over.
DEFAULT_LEASE_SECONDS = 60.0

_URL = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_KINDS = {kind.value: kind for kind in EventKind}

#: Written in ``enqueue``'s body since it checks the timestamp's shape: a function
#: without it (an earlier release's) is replaced by :func:`ensure_schema`.
_ENQUEUE_MARK = "selligent-segment enqueue: timestamp shape checked"

#: ``enqueue(tenant, message, kind)``: the one way for non-Python services (and SQL
#: triggers) to queue an event, in their own transaction: it checks what the relays need
#: (a Segment ``track`` call with an event, a messageId, an identity and a timestamp, at
#: most 32 KB) and raises ``22023`` (invalid_parameter_value) naming the field otherwise.
_ENQUEUE = """
CREATE OR REPLACE FUNCTION {s}.enqueue(tenant text, message jsonb, kind text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
DECLARE
    k text := kind;
    body bytea;
    new_id bigint;
    fail constant text := 'selligent_segment.enqueue: ';
BEGIN
    IF tenant IS NULL OR btrim(tenant) = '' THEN
        RAISE EXCEPTION '%tenant: required (the tenant whose write key sends it)', fail
            USING ERRCODE = '22023';
    END IF;
    IF message IS NULL OR jsonb_typeof(message) <> 'object' THEN
        RAISE EXCEPTION '%message: expected a JSON object (a Segment track call)', fail
            USING ERRCODE = '22023';
    END IF;
    IF message->>'type' IS DISTINCT FROM 'track' THEN
        RAISE EXCEPTION '%message.type: expected "track", got %', fail,
            coalesce(message->>'type', 'nothing') USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(message->'event') IS DISTINCT FROM 'string'
            OR btrim(message->>'event') = '' THEN
        RAISE EXCEPTION '%message.event: required, a non-empty string', fail
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(message->'messageId') IS DISTINCT FROM 'string'
            OR btrim(message->>'messageId') = '' OR length(message->>'messageId') > 100 THEN
        RAISE EXCEPTION '%message.messageId: required, a string of 1 to 100 characters '
            '(the same id for a resent event: Segment dedups by it)', fail
            USING ERRCODE = '22023';
    END IF;
    IF NOT (coalesce(jsonb_typeof(message->'userId') = 'string'
                     AND btrim(message->>'userId') <> '', false)
            OR coalesce(jsonb_typeof(message->'anonymousId') = 'string'
                        AND btrim(message->>'anonymousId') <> '', false)) THEN
        RAISE EXCEPTION '%message: userId or anonymousId required (a non-empty string)', fail
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(message->'timestamp') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '%message.timestamp: required, an ISO 8601 time with its offset', fail
            USING ERRCODE = '22023';
    END IF;
    -- selligent-segment enqueue: timestamp shape checked. The shape first: a cast alone
    -- also takes 'now', 'epoch', 'infinity' and a time without its offset, which the
    -- relay would send to Segment as it is.
    BEGIN
        IF (message->>'timestamp') !~ ('^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[Tt][0-9]{{2}}:[0-9]{{2}}'
                '(:[0-9]{{2}}([.,][0-9]+)?)?([Zz]|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$') THEN
            RAISE EXCEPTION 'shape';
        END IF;
        PERFORM (message->>'timestamp')::timestamptz;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION '%message.timestamp: not an ISO 8601 time with its offset: %', fail,
            left(message->>'timestamp', 40) USING ERRCODE = '22023';
    END;
    IF message ? 'properties' AND jsonb_typeof(message->'properties') <> 'object' THEN
        RAISE EXCEPTION '%message.properties: expected a JSON object', fail
            USING ERRCODE = '22023';
    END IF;
    IF k IS NULL THEN
        k := CASE message->>'event'
            WHEN 'Email Delivered' THEN 'delivered'
            WHEN 'Email Opened' THEN 'opened'
            WHEN 'Email Link Clicked' THEN 'link_clicked'
            WHEN 'Email Unsubscribed' THEN 'unsubscribed'
            WHEN 'Unsubscribed' THEN 'unsubscribed'
            WHEN 'Email Bounced' THEN 'bounced'
            WHEN 'Email Marked as Spam' THEN 'marked_as_spam'
        END;
        IF k IS NULL THEN
            RAISE EXCEPTION '%kind: required for the event name % (one of delivered, '
                'opened, link_clicked, unsubscribed, bounced, marked_as_spam)', fail,
                left(message->>'event', 60) USING ERRCODE = '22023';
        END IF;
    ELSIF k NOT IN ('delivered', 'opened', 'link_clicked', 'unsubscribed', 'bounced',
                    'marked_as_spam') THEN
        RAISE EXCEPTION '%kind: expected one of delivered, opened, link_clicked, '
            'unsubscribed, bounced, marked_as_spam, got %', fail, left(k, 40)
            USING ERRCODE = '22023';
    END IF;
    body := convert_to(message::text, 'UTF8');
    IF octet_length(body) > 32768 THEN
        RAISE EXCEPTION '%message: % bytes, over Segment''s limit of 32768 per message',
            fail, octet_length(body) USING ERRCODE = '22023';
    END IF;
    INSERT INTO {s}.messages (tenant, message_id, kind, body)
        VALUES (tenant, message->>'messageId', k, body)
        RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;
"""
_TABLES = (
    """
CREATE TABLE IF NOT EXISTS {s}.meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL,
    generation BIGINT NOT NULL DEFAULT 1,
    rotated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO {s}.meta (version) VALUES ({version}) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION {s}.generation() RETURNS BIGINT
    LANGUAGE sql STABLE AS $$ SELECT generation FROM {s}.meta $$;
CREATE SEQUENCE IF NOT EXISTS {s}.messages_id;
CREATE TABLE IF NOT EXISTS {s}.messages (
    generation BIGINT NOT NULL DEFAULT {s}.generation(),
    id BIGINT NOT NULL DEFAULT nextval('{s}.messages_id'),
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    owner TEXT,
    lease_until TIMESTAMPTZ,
    PRIMARY KEY (generation, id)
) PARTITION BY LIST (generation);
-- Bodies stored as they are (never compressed): the partitions' size on disk is then an
-- upper bound of the bodies queued, which has_room reads without touching a row.
ALTER TABLE {s}.messages ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS {s}.messages_1 PARTITION OF {s}.messages FOR VALUES IN (1);
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
CREATE TABLE IF NOT EXISTS {s}.last_errors (
    tenant TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    status INTEGER
);
"""
    + _ENQUEUE
)

#: The two counting functions of version 2. They run as the schema's owner (``SECURITY
#: DEFINER``), so they count for the queue alone: they refuse any other table, and only
#: their owner may attach them (EXECUTE revoked from PUBLIC; a trigger fires whoever
#: writes). Otherwise a role allowed to use the schema could attach them to a table of
#: its own and forge the counts.
_COUNTING = """
CREATE OR REPLACE FUNCTION {s}.count_added() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_RELID <> '{s}.messages'::regclass THEN
        RAISE EXCEPTION 'count_added counts {s}.messages only';
    END IF;
    INSERT INTO {s}.queue_counts (tenant, n, nbytes)
        SELECT tenant, count(*), sum(length(body)) FROM added GROUP BY tenant;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.count_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_RELID <> '{s}.messages'::regclass THEN
        RAISE EXCEPTION 'count_removed counts {s}.messages only';
    END IF;
    INSERT INTO {s}.queue_counts (tenant, n, nbytes)
        SELECT tenant, -count(*), -sum(length(body)) FROM removed GROUP BY tenant;
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION {s}.count_added(), {s}.count_removed() FROM PUBLIC;
"""

#: Version 2: the queue's counts per tenant, kept by the database itself, so that
#: :meth:`PostgresSpool.stats` and ``spool status`` never read the queue. Two
#: statement-level triggers on ``messages`` (the partitioned root: they see the rows routed
#: to every partition, by ``INSERT``, ``COPY``, ``enqueue`` or anyone's SQL) append ONE
#: delta row per statement and tenant (rows, body bytes) to ``queue_counts``; a delete
#: appends the negative. Append-only: no writer ever waits on another's counter row (an
#: outbox transaction holds only its own uncommitted deltas, which vanish with a
#: rollback). :func:`compact_counts` folds the deltas into one row per tenant now and then.
#: The trigger functions run as the schema's owner (``SECURITY DEFINER``), so a service
#: allowed to insert into ``messages`` needs no grant on ``queue_counts``.
_QUEUE_COUNTS = (
    """
CREATE TABLE IF NOT EXISTS {s}.queue_counts (
    tenant TEXT NOT NULL,
    n BIGINT NOT NULL,
    nbytes BIGINT NOT NULL
);
"""
    + _COUNTING
    + """-- Counted from the rows as they are once the triggers exist: the lock keeps every writer
-- out from here to the commit, so no row is counted twice or missed.
LOCK TABLE {s}.messages IN SHARE ROW EXCLUSIVE MODE;
DROP TRIGGER IF EXISTS count_added ON {s}.messages;
DROP TRIGGER IF EXISTS count_removed ON {s}.messages;
CREATE TRIGGER count_added AFTER INSERT ON {s}.messages
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_added();
CREATE TRIGGER count_removed AFTER DELETE ON {s}.messages
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_removed();
DELETE FROM {s}.queue_counts;
INSERT INTO {s}.queue_counts (tenant, n, nbytes)
    SELECT tenant, count(*), sum(length(body)) FROM {s}.messages GROUP BY tenant;
-- Per tenant with rows: queued (leased included), their bodies' bytes, live leases. The
-- counts from queue_counts; the leases through the partial index messages_owner, which
-- holds only leased rows. Seq scans off: without fresh statistics the planner would read
-- the whole queue to find them; JIT off: that setting's cost estimates would start it.
CREATE OR REPLACE FUNCTION {s}.queue_totals()
RETURNS TABLE (tenant text, queued bigint, nbytes bigint, leased bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $fn$
    SELECT c.tenant, c.queued, c.nbytes, coalesce(l.leased, 0)
    FROM (SELECT q.tenant, sum(q.n)::bigint AS queued, sum(q.nbytes)::bigint AS nbytes
          FROM {s}.queue_counts q GROUP BY q.tenant HAVING sum(q.n) <> 0) AS c
    LEFT JOIN (SELECT m.tenant, count(*) AS leased FROM {s}.messages m
               WHERE m.owner IS NOT NULL AND m.lease_until >= now()
               GROUP BY m.tenant) AS l ON l.tenant = c.tenant
$fn$;
"""
)

#: Seconds an upgrade waits for the queue (the writers wait behind it meanwhile).
MIGRATION_LOCK_TIMEOUT = 5.0

#: The steps from each version to the next: ``_MIGRATIONS[v]`` brings version ``v`` to
#: ``v + 1`` (in :func:`ensure_schema`'s transaction, under its lock). Each is its own
#: step, so that another change of the tables adds one more.
_MIGRATIONS = {1: _QUEUE_COUNTS}

#: The most partitions a due rotation leaves the queue with: past it none is attached until
#: some are dropped (a long snapshot elsewhere, or an outage's backlog, holds them), so that
#: leases never scan hundreds (``rotate(force=True)`` still attaches one).
MAX_PARTITIONS = 16

#: The largest NOTIFY payload sent (PostgreSQL's limit is 8,000 bytes).
NOTIFY_MAX = 7900

#: The most leasable rows :meth:`PostgresSpool.tenants` counts per tenant (the senders only
#: need to know whether a full batch waits: Segment's limit is 2,500 messages a request).
COUNT_CAP = 2500

#: Seconds between two rotations of the queue's partitions (see :meth:`PostgresSpool.rotate`).
DEFAULT_ROTATE_SECONDS = 60.0


def is_postgres_url(spool: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` spool setting."""
    return isinstance(spool, str) and _URL.match(spool) is not None


#: What PostgreSQL ``text`` cannot hold: NUL, and a lone UTF-16 surrogate (no UTF-8 form).
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def pg_text(text: str) -> str:
    """``text`` as PostgreSQL ``text`` can hold it: NUL removed, each lone surrogate
    replaced by U+FFFD; anything else kept as it is. Every text from outside that this
    spool writes (a reject's reason, a last error, a pause's reason) goes through it."""
    return _NOT_TEXT.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


#: A URL's password: in its user part (``user:PASSWORD@``), or a secret query parameter
#: of libpq's (``?password=``, ``?sslpassword=``; its name may be percent-encoded). libpq
#: reads the user part up to the first ``@`` before any ``/``, a raw ``?`` or ``#`` in it
#: included; redacted up to the last ``@`` before any ``/`` (a raw ``@`` in a password,
#: refused by the spool, shows no piece of it either).
_USER_PASSWORD = re.compile(r"(://[^:/@]*:)([^/]*)@")
#: The start of a URL up to the end of its user part as libpq reads it (the first ``@``
#: before any ``/``): ``postgresql://user:pass?word@``.
_LIBPQ_USER_PART = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^@/]*@")
_QUERY_PARAM = re.compile(r"([?&])([^=&#]*)=([^&#]*)")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def _secret_param(match: re.Match[str]) -> bool:
    return urllib.parse.unquote(match.group(2)).lower() in _SECRET_PARAMS


def redact(url: str) -> str:
    """``url`` with each password in it (user part, ``password=`` and ``sslpassword=``
    query parameters) replaced by ``***``: for messages and reprs."""
    url = _USER_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PARAM.sub(
        lambda m: f"{m.group(1)}{m.group(2)}=***" if _secret_param(m) else m.group(), url
    )


def _passwords(url: str) -> set[str]:
    """The passwords in ``url`` (see :func:`redact`) as written and percent-decoded, and
    ``PGPASSWORD``'s: what an error text must not show."""
    found = [m.group(2) for m in _USER_PASSWORD.finditer(url)]
    found += [m.group(3) for m in _QUERY_PARAM.finditer(url) if _secret_param(m)]
    found.append(os.environ.get("PGPASSWORD", ""))
    return {form for text in found for form in (text, urllib.parse.unquote(text)) if form}


def without_passwords(url: str, text: str) -> str:
    """``text`` with every password of ``url`` (:func:`_passwords`) replaced by ``***``,
    longest first: for any text built from the driver's messages, which may quote one."""
    for secret in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


#: The URL query parameters that are the spool's, not libpq's (taken out before connecting).
URL_OPTIONS = ("spool_schema", "lease_seconds", "rotate_seconds", "notify")


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the spool's own query parameters (:data:`URL_OPTIONS`), and those:
    ``postgresql://db/app?lease_seconds=30&spool_schema=mail_events&sslmode=require``
    keeps ``sslmode`` for libpq. libpq's parameters are kept exactly as written (libpq
    decodes ``%20``, not ``+``: ``?options=-c%20statement_timeout%3D5000`` stays so). The
    query starts after the user part as libpq reads it (a password may hold a raw ``?``)."""
    user = _LIBPQ_USER_PART.match(url)
    head = user.group() if user else ""
    base, mark, query = url[len(head) :].partition("?")
    query, hash_mark, fragment = query.partition("#")
    kept: list[str] = []
    ours: dict[str, str] = {}
    for pair in query.split("&") if mark else ():
        key, _, value = pair.partition("=")
        name = urllib.parse.unquote(key)
        if name in URL_OPTIONS:
            ours[name] = urllib.parse.unquote(value)
        elif pair:
            kept.append(pair)
    rest = f"?{'&'.join(kept)}" if kept else ""
    return f"{head}{base}{rest}{hash_mark}{fragment}", ours


def _raw_at_in_password(url: str) -> bool:
    """True when a raw ``@`` follows the user part libpq reads (up to the first ``@``)
    before the host part ends: a password holding one, which libpq would cut there."""
    user = _LIBPQ_USER_PART.match(url)
    if user is None:
        return False
    host = re.split(r"[/?]", url[user.end() :], maxsplit=1)[0]
    return "@" in host


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(name, f"expected seconds, got {text[:20]!r}") from None
    if not 0 < value < 86400:
        raise ConfigurationError(name, "must be above 0 and under a day")
    return value


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            "spool",
            "a postgresql:// spool needs psycopg: pip install 'selligent-segment[postgres]'",
        ) from None
    return psycopg


def check_schema_name(schema: str) -> str:
    """``schema`` when it is a plain lower-case SQL name (it is written into statements);
    ConfigurationError naming ``spool_schema`` otherwise."""
    if not _NAME.match(schema):
        raise ConfigurationError("spool_schema", f"{schema!r} is not a plain lower-case SQL name")
    return schema


def schema_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The version of the spool tables in ``schema``; None when there are none."""
    exists = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'meta'",
        (schema,),
    ).fetchone()
    if not exists:
        return None
    row = conn.execute(f"SELECT version FROM {check_schema_name(schema)}.meta").fetchone()
    return None if row is None else int(row[0])


def newer_schema(schema: str, version: int) -> SpoolError:
    """The error for tables written by a later release."""
    return SpoolError(
        f"PostgreSQL spool schema {schema}: version {version} was written by a newer "
        f"selligent-segment (this one reads version {SCHEMA_VERSION}); upgrade it"
    )


def ensure_schema(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> int | None:
    """Create the schema and its tables at :data:`SCHEMA_VERSION` if missing, or bring an
    older version up to it (:data:`_MIGRATIONS`, step by step), in one transaction under
    an advisory lock, so hosts starting together do it once; raise :class:`SpoolError` for
    a newer version written by a later release. Returns the version found before (None:
    created now)."""
    check_schema_name(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        version = schema_version(conn, schema)
        if version is not None and version > SCHEMA_VERSION:
            raise newer_schema(schema, version)
        if version == SCHEMA_VERSION:
            _guard_counting(conn, schema)
            _refresh_enqueue(conn, schema)
            return version
        if version is None:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(_TABLES.format(s=schema, version=1))
        step = version or 1
        if version is not None:  # the queue's writers wait while a step holds it: bounded
            conn.execute(f"SET LOCAL lock_timeout = {int(MIGRATION_LOCK_TIMEOUT * 1000)}")
        try:
            while step < SCHEMA_VERSION:
                conn.execute(_MIGRATIONS[step].format(s=schema))
                step += 1
                conn.execute(f"UPDATE {schema}.meta SET version = %s", (step,))
            _refresh_enqueue(conn, schema)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise SpoolError(
                f"schema {schema}: the upgrade from version {version} to {SCHEMA_VERSION} "
                "needs the queue to itself for one scan, and another transaction (an "
                f"open outbox transaction?) held it for {MIGRATION_LOCK_TIMEOUT:g} s: "
                "nothing was changed; try again (selligent-segment spool init)"
            ) from None
        return version


def _refresh_enqueue(conn: psycopg.Connection[Any], schema: str) -> None:
    """Bring ``enqueue`` to this release's (:data:`_ENQUEUE`) when it lacks
    :data:`_ENQUEUE_MARK` (an earlier release's took any text ``timestamptz`` reads, ``now``
    or a time without its offset): its owner does it, at its next start; a start by another
    role leaves it, and says so."""
    row = conn.execute(
        "SELECT strpos(p.prosrc, %s) > 0, pg_has_role(p.proowner, 'USAGE') FROM pg_proc p "
        "WHERE p.oid = to_regprocedure(%s)",
        (_ENQUEUE_MARK, f"{schema}.enqueue(text, jsonb, text)"),
    ).fetchone()
    if row is None or row[0]:
        return  # up to date (or dropped by hand: left as it is)
    _redo_as_owner(
        conn,
        schema,
        owner=row[1],
        statement=_ENQUEUE,
        stale="its enqueue function still takes timestamps without an offset "
        "('now', '2026-11-30 10:00')",
        fix="bring it up to date",
    )


def _redo_as_owner(
    conn: psycopg.Connection[Any], schema: str, *, owner: bool, statement: str, stale: str, fix: str
) -> None:
    """Run ``statement`` (formatted with the schema) when this role owns what it redoes;
    else say what is ``stale`` and that a start as the owner will ``fix`` it."""
    if not owner:
        log.warning(
            "schema %s: %s; run selligent-segment spool init once as the schema's owner to %s",
            schema,
            stale,
            fix,
            extra={"reason": "spool_schema"},
        )
        return
    conn.execute(statement.format(s=schema))


def _guard_counting(conn: psycopg.Connection[Any], schema: str) -> None:
    """Bring the counting functions of a version-2 schema an earlier release made (any
    role could attach them) to :data:`_COUNTING`'s: their owner does it, once, at its next
    start (the functions keep their names and what they count: hosts of either release
    go on meanwhile); a start by another role leaves them, and says so."""
    row = conn.execute(
        "SELECT has_function_privilege('public', p.oid, 'EXECUTE'), "
        "pg_has_role(p.proowner, 'USAGE') FROM pg_proc p WHERE p.oid = to_regprocedure(%s)",
        (f"{schema}.count_added()",),
    ).fetchone()
    if row is None or not row[0]:
        return
    _redo_as_owner(
        conn,
        schema,
        owner=row[1],
        statement=_COUNTING,
        stale="its counting functions may still be attached by any role that may use the "
        "schema, to forge the queue's counts",
        fix="guard them",
    )


def compact_counts(conn: psycopg.Connection[Any], schema: str) -> int:
    """Fold ``queue_counts``'s deltas into one row per tenant (tenants at zero dropped), in
    one transaction: readers see the deltas or their sums, never half. One process at a
    time (``pg_try_advisory_xact_lock``: another one compacting means this one skips);
    deltas not yet committed (an open outbox transaction's) are left for the next time.
    Returns the rows removed (0: skipped, or nothing to fold)."""
    s = check_schema_name(schema)
    with conn.transaction():
        key = f"{s}:counts"
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (key,)).fetchone()
        if not (locked and locked[0]):
            return 0
        rows = conn.execute(f"SELECT count(*), count(DISTINCT tenant) FROM {s}.queue_counts")
        total, tenants = rows.fetchone() or (0, 0)
        if total <= tenants:
            return 0  # one row per tenant already: rewriting it would only make dead rows
        folded = conn.execute(
            f"""WITH gone AS (DELETE FROM {s}.queue_counts RETURNING tenant, n, nbytes)
            INSERT INTO {s}.queue_counts (tenant, n, nbytes)
            SELECT tenant, sum(n), sum(nbytes) FROM gone GROUP BY tenant
            HAVING sum(n) <> 0 OR sum(nbytes) <> 0"""
        )
        return int(total) - max(0, folded.rowcount)


class Unreachable(SpoolError):
    """The database cannot be reached or cannot serve now (the driver's
    ``OperationalError``: a lost or refused connection, a shutdown, a timeout): what is
    kept in memory to be written later. Any other database error is about the statement
    or its data, and writing it again would fail again."""


def database_error(url: str, exc: BaseException) -> SpoolError:
    """A driver error as a SpoolError naming the server (never a password: not from the
    URL, nor quoted by the driver's message, see :func:`without_passwords`); an
    :class:`Unreachable` for the driver's ``OperationalError``."""
    text = without_passwords(url, str(exc).strip())
    unreachable = isinstance(exc, _psycopg().OperationalError)
    return (Unreachable if unreachable else SpoolError)(
        f"PostgreSQL spool {redact(url)}: {type(exc).__name__}: "
        f"{text.splitlines()[0] if text else 'no detail'}"
    )


#: libpq's TCP settings unless the URL gives its own: a network that goes silent on an
#: open connection (packets dropped, no reset) ends it within about a minute, where the
#: operating system's defaults wait two hours and more (an ``emit`` waiting all along).
SILENT_NETWORK_LIMITS: Final = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


def connect(
    url: str,
    *,
    schema: str | None = None,
    connect_timeout: float = 5.0,
    role: str = "",
    prepare: bool = True,
) -> psycopg.Connection[Any]:
    """A new autocommit connection to ``url`` (the spool's own options taken out), named
    ``selligent-segment[-ROLE] SCHEMA PID.TAG@HOST`` in ``pg_stat_activity`` (``spool status``
    counts the processes of a schema by it), at READ COMMITTED whatever the database's
    ``default_transaction_isolation`` (:func:`_read_committed`); a driver error leaves as
    :func:`database_error`. Without ``prepare``, or with ``notify=off`` in ``url`` (the
    setting for a pooler in transaction mode), the driver never prepares a statement on
    the server (``prepare_threshold=None``): behind a pooler that does not track them
    (pgbouncer before 1.21, or ``max_prepared_statements = 0``) the next transaction may
    run on another server connection, where it does not exist."""
    psycopg = _psycopg()
    libpq_url, options = split_options(url)
    schema = schema or options.get("spool_schema", DEFAULT_SCHEMA)
    prepare = prepare and options.get("notify") != "off"
    app = f"{APPLICATION}-{role}" if role else APPLICATION
    try:
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(libpq_url)
        silent = {k: v for k, v in SILENT_NETWORK_LIMITS.items() if k not in given}
        conn = psycopg.connect(
            libpq_url,
            autocommit=True,
            connect_timeout=max(1, int(connect_timeout)),
            application_name=application_name(app, schema),
            **silent,
            **({} if prepare else {"prepare_threshold": None}),
        )
    except psycopg.Error as exc:
        raise database_error(url, exc) from None
    try:
        _read_committed(conn)
    except psycopg.Error as exc:
        conn.close()
        raise database_error(url, exc) from None
    return conn  # type: ignore[no-any-return]


def _read_committed(conn: psycopg.Connection[Any]) -> None:
    """Pin ``conn`` (one of the spool's own, never a caller's) to READ COMMITTED: leases
    (``FOR UPDATE SKIP LOCKED``) and settlements are written for it; at REPEATABLE READ or
    SERIALIZABLE, a row another host leased after this transaction's snapshot fails the
    lease with a serialization failure. Each transaction block says so in its ``BEGIN``
    (the lease is one), never the session: behind a pooler in transaction mode a session
    setting would stay on a server connection that other clients then use."""
    conn.isolation_level = _psycopg().IsolationLevel.READ_COMMITTED


#: Tells this process from others with its pid (pid 1 in every container): set again in a
#: forked child.
_PROCESS_TAG = secrets.token_hex(3)


def _new_process_tag() -> None:
    global _PROCESS_TAG
    _PROCESS_TAG = secrets.token_hex(3)


os.register_at_fork(after_in_child=_new_process_tag)


def application_name(app: str, schema: str) -> str:
    """``APP SCHEMA PID.TAG@HOST``, cut to PostgreSQL's 63 characters: the process's pid
    and random tag come before the host, whose name a cut may shorten, so ``spool
    status`` counts two processes apart however long their host names (two pods of one
    deployment differ only at the end of theirs, and both run as pid 1)."""
    return f"{app} {schema} {os.getpid()}.{_PROCESS_TAG}@{socket.gethostname()}"[:63]


def _owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


#: The types of the columns ``put_many`` copies (binary COPY needs them).
_COPY_TYPES = ("text", "text", "text", "bytea")
#: A row of the queue: (generation, id), its partition and its key.
_RowId = tuple[int, int]
#: Rows given as two arrays (see :func:`_row_params`).
_ROWS_IN = "(generation, id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"


def _row_params(rowids: Sequence[_RowId]) -> tuple[list[int], list[int]]:
    return [g for g, _ in rowids], [i for _, i in rowids]


#: A row to move into ``dead_letters``: its id, the message id and body to keep there,
#: and why.
_Dead = tuple[_RowId, str, bytes, str]
#: What a lease took (row ids and messages), the rows it buried (damaged records) and why.
_Picked = tuple[list[tuple[_RowId, EncodedMessage]], list[_Dead], list[InvalidEvent]]
#: A settlement kept until the database answers: action, rows, reason, status, and the
#: messages as leased (for a reject).
#: (action, the lease's owner, its rows, reason, status, the messages as leased).
_Settlement = tuple[
    str, str, tuple[_RowId, ...], str | None, int | None, tuple[EncodedMessage, ...]
]


#: Leasing rounds one ``lease`` call goes through while every row it takes is a dead
#: letter (a damaged record), before it returns empty-handed until the tenant's next turn.
DEAD_ROUNDS = 4


def _plain_reason(reason: str | None) -> str:
    """A dead letter's reason when ``reason`` could not be written: its first word (what
    ``dead-letters requeue --reason`` matches), in plain ASCII, and that."""
    first = re.sub(r"[^A-Za-z0-9_ -]", "", (reason or "").partition(":")[0])[:40].strip()
    return f"{first or 'rejected'}: (the reason could not be stored)"


def _dead_reason(exc: InvalidEvent) -> str:
    """The dead letter's reason for a record a lease could not make a message of."""
    if isinstance(exc, UnreadableRecord):
        return f"unreadable_record: {exc.reason}"
    return f"too_large: {exc}"


class _Stale(Unreachable):
    """A pooled connection turned out dead (the server restarted or cut it): the work may
    be tried once more on a new connection (:meth:`PostgresSpool._retried`)."""


_T = TypeVar("_T")


@attrs.define
class _Held:
    """A live lease's owner (the process's name and the lease's number: a late settlement
    of an expired lease never touches the rows a newer lease of the same process holds)
    and its row ids, by the identity of its messages."""

    owner: str
    rowids: dict[int, _RowId]


#: The most messages a ``put_many`` sends through the group commit (more go in a ``COPY``
#: of their own: a long one would hold the others' rows back).
GROUP_MAX = 64
#: Groups written at once, each on its own connection. One: measured with 8 threads on
#: loopback, one writer (groups of about 4) took a third of the server's CPU per row of
#: eight writers (groups of 1) and was as fast or faster; a slower network lets more
#: callers gather in each group instead.
GROUP_WRITERS = 1


class _Group:
    """Rows of concurrent callers that will share one statement and one commit; its
    callers wait on ``ready`` (sharing the group commit's lock)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.rows: list[QueueRow] = []
        self.callers = 0
        self.taken = False  # a caller is writing it (no longer open)
        self.done = False
        self.error: SpoolError | None = None
        self.ready = threading.Condition(lock)


class _GroupCommit:
    """Group commits for concurrent writers of one process: a caller adds its rows to the
    open group; when fewer than ``writers`` groups are being written, it takes the open
    group (its own rows and whatever other callers added meanwhile) and writes it with
    ``write`` (one statement, one commit), while callers arriving meanwhile gather in the
    next group.

    Guarantees: each caller returns once the group holding its rows is committed; when
    that group's write fails, every caller of the group gets a :class:`SpoolError` with
    the same text and none of the group's rows is written (one statement: all or none);
    a group is written by one caller, once. A caller with nobody else writing writes at
    once (no added wait): a group forms only from the callers that arrive while
    ``writers`` groups are being written. Only the callers of a finished group, and one
    caller of the open group (to write it), are woken.
    """

    def __init__(
        self, write: Callable[[Sequence[QueueRow]], None], writers: int = GROUP_WRITERS
    ) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._open = _Group(self._lock)
        self._writers = 0
        self.max_writers = writers

    def waiting(self) -> int:
        """Callers in the open group (not yet being written): for tests."""
        with self._lock:
            return self._open.callers

    def put(self, rows: Sequence[QueueRow]) -> None:
        """Write ``rows`` in a group; returns once committed, or raises SpoolError."""
        with self._lock:
            group = self._open
            group.rows.extend(rows)
            group.callers += 1
            while not group.done:
                if not group.taken and self._writers < self.max_writers:
                    group.taken = True  # it is this caller's to write; the next one opens
                    self._writers += 1
                    self._open = _Group(self._lock)
                    break
                group.ready.wait()
            else:
                if group.error is not None:  # each caller its own exception, same text
                    raise SpoolError(str(group.error))
                return
        try:
            self._write(group.rows)
        except SpoolError as exc:
            group.error = exc
        except BaseException as exc:  # a bug: every caller of the group hears of it
            group.error = SpoolError(f"PostgreSQL spool: the group's write failed: {exc!r}")
            raise
        finally:
            with self._lock:
                group.done = True
                self._writers -= 1
                group.ready.notify_all()
                self._open.ready.notify()  # one of the open group's callers writes it
        if group.error is not None:
            raise group.error


#: Seconds a listener waits for a notification before it looks whether it should stop: an
#: emitter's ``close`` waits for it (one second made every close take about a second).
LISTEN_TICK = 0.1


class Listener:
    """A thread that ``LISTEN``s on a spool's channel (its schema's name) and calls
    ``woken(counts)`` when other processes committed rows: ``counts`` is ``{tenant: rows}``
    of the batches received together, or None for "look at the table" (a batch too large
    to name, and right after each (re)connection: what was sent while not listening was
    not received). This process's own notifications are skipped (it counted its rows),
    but for its outbox inserts' (:attr:`PostgresSpool.outbox_token`: nobody counted those
    rows, committed by the caller), which wake it as another process's do.

    Guarantee: it only ever wakes senders earlier; it is not needed for delivery. A lost
    connection is logged, retried with a growing pause (1 to 30 s), and meanwhile the
    senders' polling (once a second) finds every row. ``woken`` runs on this thread; an
    exception from it is logged and listening goes on.
    """

    def __init__(self, spool: PostgresSpool, woken: Callable[[dict[str, int] | None], None]):
        self.spool = spool
        self.woken = woken
        self.connected = threading.Event()  # set while LISTEN is in effect (for tests)
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=in_library_thread(self._run), name="selligent-segment-listen", daemon=True
        )

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop listening (the thread notices within :data:`LISTEN_TICK` seconds)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        spool, pause = self.spool, 1.0
        while not self._stop.is_set():
            try:
                conn = connect(spool._url, schema=spool.schema, role="listen")
            except SpoolError as exc:
                log.warning("cannot LISTEN (polling meanwhile): %s", exc)
                self._stop.wait(pause)
                pause = min(30.0, pause * 2)
                continue
            try:
                with conn:
                    conn.execute(f"LISTEN {spool.schema}")
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    pause = 1.0
                    self._wake(None)
                    while not self._stop.is_set():
                        batch = list(conn.notifies(timeout=LISTEN_TICK, stop_after=1))
                        if batch:
                            batch.extend(conn.notifies(timeout=0))  # what came with it
                            self._received([n.payload for n in batch])
            except spool._psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning(
                        "LISTEN connection lost (polling meanwhile): %s",
                        database_error(spool._url, exc),
                    )
                    self._stop.wait(pause)
                    pause = min(30.0, pause * 2)
            finally:
                self.connected.clear()

    def _received(self, payloads: Sequence[str]) -> None:
        counts: dict[str, int] = {}
        everything = False
        for payload in payloads:
            try:
                token, named = json.loads(payload)
            except (ValueError, TypeError):
                everything = True  # not ours in shape: look at the table
                continue
            if token == self.spool.token:
                continue
            if not isinstance(named, dict):
                everything = True
                continue
            for tenant, n in named.items():
                counts[str(tenant)] = counts.get(str(tenant), 0) + (n if isinstance(n, int) else 0)
        if everything:
            self._wake(None)
        elif counts:
            self._wake(counts)

    def _wake(self, counts: dict[str, int] | None) -> None:
        try:
            self.woken(counts)
        except Exception:  # the senders' polling still finds the rows
            log.exception("error waking the senders")


#: ``(url, schema)`` of the spools whose schema :func:`ensure_schema` checked, and the pid
#: of the process that did: a forked child, which inherits it, does not check again.
_schema_checked: dict[tuple[str, str], int] = {}


class PostgresSpool:
    """A :class:`~selligent_segment.spool._protocol.Spool` in a PostgreSQL database,
    shared by any number of processes on any number of hosts.

    ``url`` is a libpq URL (``postgresql://user@host:port/db``; the password, if any, from
    the URL, ``PGPASSWORD`` or ``~/.pgpass``). ``max_bytes`` caps the bodies queued (the
    whole table, every host's rows), ``lease_seconds`` is how long a lease protects its rows.
    Every method is thread-safe; connections are kept in a small pool, one per concurrent
    caller.

    Constructing one checks the schema (:func:`ensure_schema`) and counts the tenants: a
    database that cannot be reached then is a SpoolError. In a process forked from one
    that checked this URL's schema (an Emitter rebuilt in a forked worker), it makes no
    round trip: the database may be away for a moment at the fork, and the child's first
    use (an ``emit``, the senders' first poll) meets it as any later use would.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_bytes: int = 1 << 30,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
        notify: bool = True,
        owner: str | None = None,
        connect_timeout: float = 5.0,
        on_buried: OnBuried | None = None,
    ) -> None:
        if not is_postgres_url(url):
            raise ConfigurationError("spool", "expected a postgresql:// URL")
        if _raw_at_in_password(url):  # not shown: it is the password
            raise ConfigurationError(
                "spool", "the URL's user part holds a raw '@': percent-encode it as %40"
            )
        url, options = split_options(url)
        schema = options.get("spool_schema", schema)
        if "lease_seconds" in options:
            lease_seconds = _seconds("lease_seconds", options["lease_seconds"])
        if "rotate_seconds" in options:
            rotate_seconds = _seconds("rotate_seconds", options["rotate_seconds"])
        if "notify" in options:
            if options["notify"] not in ("on", "off"):
                raise ConfigurationError("notify", "expected on or off")
            notify = options["notify"] == "on"
        if not lease_seconds > 0:
            raise ConfigurationError("lease_seconds", "must be above 0")
        self._psycopg = _psycopg()
        self._url = url
        self.schema = schema
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self.rotate_seconds = rotate_seconds
        #: Send a NOTIFY per committed batch (and, with an intake, listen): URL ``notify=off``
        #: turns both off (a pooler in transaction mode, e.g., cannot LISTEN), and
        #: statements prepared on the server with them.
        self.notify = notify
        #: Statements run often are prepared on the server, except with ``notify=off``
        #: (behind a pooler in transaction mode: see :func:`connect`).
        self._prepare = notify
        self.token = secrets.token_hex(6)  # this process's notifications, told from others'
        self._next_rotate = 0.0
        self.owner = owner or _owner_name()
        # A lease's owner is this one's, a random tag of this spool's and the lease's
        # number (see _Held): two spools of one name (two Emitters on one URL, two hosts
        # of one hostname and pid) never settle each other's leases.
        self._lease_tag = secrets.token_hex(4)
        self._leases = 0
        self._connect_timeout = connect_timeout
        #: Told of each record a lease buried (its tenant, why), after the transaction.
        self._on_buried = on_buried
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._unwritten: list[_Settlement] = []
        # has_room's readings: (bytes, when, self._put_bytes then) of the bound on disk
        # and of the exact sum; what this process wrote since is added to either.
        self._put_bytes = 0
        self._bound: tuple[int, float, int] = (0, -2.0, 0)
        self._exact: tuple[int, float, int] = (0, -2.0, 0)
        self._exact_cost = 0.0
        # Leasable rows per tenant, as last counted (tenants(), once a second) and kept up
        # to date with this process's own puts, leases and releases: backlog() is asked
        # under the dispatcher's lock and must not wait on the database.
        self._backlog: dict[str, int] = {}
        self._many: set[str] = set()  # tenants counted at COUNT_CAP (at least that many)
        # The queue's generation as last read (tenants(), once a second; rotate()): where
        # large COPYs put their rows (see _copy_now). Stale is harmless: the rows go into
        # an older partition, which is dropped once drained like any other.
        self._generation: int | None = None
        self._last_stats = SpoolStats(0, 0, 0, {})
        self._group = _GroupCommit(self._insert)
        checked = (url, schema)
        if _schema_checked.get(checked, os.getpid()) != os.getpid():
            # Made in a process forked from one that checked this schema (an Emitter
            # rebuilt at the fork): no round trip here, which a database away for a moment
            # would fail for the child's whole life; the first poll counts the tenants.
            return
        self._with(lambda conn: ensure_schema(conn, schema))
        _schema_checked[checked] = os.getpid()
        self.tenants()  # the first counts backlog() answers from

    def __repr__(self) -> str:
        return f"<PostgresSpool {redact(self._url)} schema={self.schema}>"

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode; a broken one is dropped, and a database
        error leaves as :class:`SpoolError` naming the server (never its password)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        psycopg = self._psycopg
        try:
            if conn is None or conn.closed:
                conn = connect(
                    self._url,
                    schema=self.schema,
                    connect_timeout=self._connect_timeout,
                    prepare=self._prepare,
                )
            yield conn
        except psycopg.Error as exc:
            if conn is not None and not conn.closed and conn.info.transaction_status != 0:
                conn.close()  # in a failed state: never pooled
            if isinstance(exc, psycopg.OperationalError):
                # The server restarted or cut us off: the idle connections are as dead as
                # this one; the next call connects afresh.
                with self._lock:
                    idle, self._idle = self._idle, []
                for other in idle:
                    other.close()
            error = database_error(self._url, exc)
            if reused and isinstance(error, Unreachable):
                raise _Stale(str(error)) from None
            raise error from None
        else:
            with self._lock:
                self._idle.append(conn)

    def _with(
        self, work: Callable[[psycopg.Connection[Any]], _T], *, transaction: bool = False
    ) -> _T:
        """``work(conn)`` on a pooled connection (in one transaction if asked), run once
        more on a new connection when the pooled one turned out dead (every idle one is
        dropped by then). Every caller's work is safe to repeat: settlements check the
        owner, a lease that failed took nothing, a COPY that failed before its commit
        wrote nothing (one whose commit landed but whose answer was lost is written twice:
        the same ``messageId`` twice, which Segment dedups)."""

        def once() -> _T:
            with self._connection() as conn:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    return work(conn)

        try:
            return once()
        except _Stale:
            return once()

    # -- the Spool protocol ---------------------------------------------------------------

    def has_room(self, nbytes: int, *, fresh: bool = False) -> bool:
        """True when ``nbytes`` more fit under ``max_bytes`` (the bodies of the whole
        table, every host's rows).

        Without reading a row: the partitions' size on disk (heap and TOAST, read from the
        catalogue at most once a second, or now when ``fresh``) bounds the bodies from
        above, since they are stored uncompressed; while that bound plus what this process
        wrote since leaves room, the answer is yes. Only when it does not is the exact sum
        read (from the counts the database keeps, ``queue_counts``: no row of the queue
        read; at most once a second, or now when ``fresh``), so a refusal is always the
        exact sum's."""
        now = time.monotonic()
        if fresh or now - self._bound[1] > 1.0:
            self._bound = (self._size_bound(), now, self._put_bytes)
        bound, _, put_then = self._bound
        if bound + (self._put_bytes - put_then) + nbytes <= self.max_bytes:
            return True
        exact, exact_at, put_then = self._exact
        if now >= exact_at + max(0.0 if fresh else 1.0, self._exact_cost):
            start = time.monotonic()
            sql = f"SELECT coalesce(sum(nbytes), 0) FROM {self.schema}.queue_counts"
            row = self._with(lambda conn: conn.execute(sql).fetchone())
            self._exact_cost = 4 * (time.monotonic() - start)
            exact, put_then = (int(row[0]) if row else 0), self._put_bytes
            self._exact = (exact, now, put_then)
        return exact + (self._put_bytes - put_then) + nbytes <= self.max_bytes

    def _size_bound(self) -> int:
        """The queue's partitions' heap and TOAST sizes: at least the bodies they hold
        (``STORAGE EXTERNAL``: never compressed). A file size per partition, no row read."""
        sql = (
            "SELECT coalesce(sum(pg_relation_size(c.oid) + CASE WHEN c.reltoastrelid = 0 "
            "THEN 0 ELSE pg_relation_size(c.reltoastrelid) END), 0) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass"
        )
        name = f"{self.schema}.messages"
        row = self._with(lambda conn: conn.execute(sql, (name,), prepare=self._prepare).fetchone())
        return int(row[0]) if row else 0

    def put_many(
        self,
        messages: Sequence[EncodedMessage],
        *,
        connection: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Append ``messages`` as :meth:`put_rows` does."""
        rows = [(m.tenant, m.message_id, kind_of(m.kind), m.body) for m in messages]
        self.put_rows(rows, connection=connection)

    def put_rows(
        self,
        rows: Sequence[QueueRow],
        *,
        connection: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Append ``rows`` (messages, or records that become messages when leased, see
        :mod:`._postgres_record`), all or none, committed when this returns: up to
        :data:`GROUP_MAX` of them through the group commit (concurrent callers' rows share
        one ``INSERT`` and one commit, see :class:`_GroupCommit`), more in a ``COPY`` of
        their own; or, given the caller's ``connection``, inside the caller's open
        transaction, left for the caller to commit or roll back (the transactional
        outbox)."""
        if not rows:
            return
        if connection is not None:
            self._copy(connection, rows)
            self.notify_batch(connection, rows)  # sent if, and when, the caller commits
            return
        if len(rows) <= GROUP_MAX:
            self._group.put(rows)
        else:
            self._with(lambda conn: self._copy_now(conn, rows))
        with self._lock:
            self._put_bytes += sum(len(r[3]) for r in rows)
        self._count([r[0] for r in rows], 1)

    def _count(self, tenants: Sequence[str], sign: int) -> None:
        with self._lock:
            backlog, many = self._backlog, self._many
            for tenant in tenants:
                if sign < 0 and tenant in many:
                    continue  # at least COUNT_CAP, as counted: a lease coming back empty says
                backlog[tenant] = max(0, backlog.get(tenant, 0) + sign)

    def _insert(self, rows: Sequence[QueueRow]) -> None:
        """One group's rows in one statement, its own transaction in autocommit: one round
        trip (a single row: a prepared ``INSERT``, measured 380 -> 260 µs against
        ``BEGIN``, ``COPY``, ``COMMIT``; several: one ``INSERT ... SELECT FROM unnest``
        of four arrays, in their order). A statement that locked the queue before a
        rotation's ATTACH committed (writers never wait on it) and read the new
        generation after knows no partition for it: it fails whole with a check
        violation, and is made once more (the next statement knows the partition)."""
        s = self.schema
        insert = f"INSERT INTO {s}.messages (tenant, message_id, kind, body) "
        if len(rows) == 1:
            insert += "VALUES (%s, %s, %s, %b)"
            params: tuple[object, ...] = rows[0]
        else:
            insert += "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %b::bytea[])"
            params = tuple(map(list, zip(*rows, strict=True)))

        def write(conn: psycopg.Connection[Any]) -> None:
            try:
                conn.execute(insert, params, prepare=self._prepare)
            except self._psycopg.errors.CheckViolation:
                # A rotation attached the partition of the generation this statement read
                # after it had locked the queue, with the partitions it knew then: it
                # failed whole (nothing written); the next statement knows the new one.
                conn.execute(insert, params, prepare=self._prepare)

        self._with(write)

    def _payload(self, counts: dict[str, int], token: str | None = None) -> str:
        """The NOTIFY payload: ``[token, {tenant: rows}]`` as JSON, or ``[token, null]``
        ("look at the table") when that would not fit in 8,000 bytes; ``token`` is this
        spool's (:attr:`token`) unless given."""
        token = self.token if token is None else token
        payload = json.dumps([token, counts], separators=(",", ":"))
        if len(payload.encode()) > NOTIFY_MAX:
            payload = json.dumps([token, None])
        return payload

    @property
    def outbox_token(self) -> str:
        """The token of this spool's outbox notifications (:meth:`notify_batch`): not
        :attr:`token`, so that this process's own listener is woken by them too (nobody
        counted an outbox's rows before its commit)."""
        return f"{self.token}:outbox"

    def notify_batch(self, conn: psycopg.Connection[Any], rows: Sequence[QueueRow]) -> None:
        """Queue the batch's one ``NOTIFY`` in ``conn``'s transaction (sent at its commit,
        never on a rollback), with :attr:`outbox_token`: every listener is woken by it,
        this process's included."""
        if self.notify and rows:
            counts: dict[str, int] = {}
            for row in rows:
                counts[row[0]] = counts.get(row[0], 0) + 1
            payload = self._payload(counts, self.outbox_token)
            conn.execute("SELECT pg_notify(%s, %s)", (self.schema, payload))

    def notify_tenants(self, counts: dict[str, int]) -> None:
        """One ``NOTIFY`` telling the listeners that ``counts`` rows were committed (by
        this process, since the last one); nothing with ``notify=off``. Raises
        SpoolError when the database cannot be reached."""
        if self.notify and counts:
            payload = self._payload(counts)
            self._with(
                lambda conn: conn.execute("SELECT pg_notify(%s, %s)", (self.schema, payload))
            )

    def add_backlog(self, counts: dict[str, int]) -> None:
        """Rows other processes told of (their NOTIFY): counted for :meth:`backlog` until
        the next :meth:`tenants`."""
        with self._lock:
            for tenant, n in counts.items():
                self._backlog[tenant] = self._backlog.get(tenant, 0) + max(0, int(n))

    def _copy_now(self, conn: psycopg.Connection[Any], rows: Sequence[QueueRow]) -> None:
        """``rows`` in one ``COPY`` committed on its own (autocommit: one statement, all
        or none, two round trips fewer than ``BEGIN``/``COMMIT`` around it), into the
        partition of the generation last read (:attr:`_generation`): the column's default,
        a function call per row, cost the server about a fifth of its rows/s. When that
        partition was dropped meanwhile (a rotation found it drained before this COPY
        began; once it began, the drop waits for it), the COPY fails whole and is made
        again with the default; failing so once more (a rotation attached a partition
        meanwhile, see :meth:`_insert`), once more again."""
        generation = self._generation
        if generation is not None:
            try:
                self._copy(conn, rows, generation)
                return
            except self._psycopg.errors.CheckViolation:  # no partition for it any more
                self._generation = None
        try:
            self._copy(conn, rows)
        except self._psycopg.errors.CheckViolation:  # a partition attached meanwhile
            self._copy(conn, rows)  # (see _insert): this statement knows it

    def _copy(
        self, conn: psycopg.Connection[Any], rows: Sequence[QueueRow], generation: int | None = None
    ) -> None:
        # Binary COPY: the bodies go as they are (the text format sends bytea hex-escaped,
        # twice their size); measured about 12 % more rows/s on loopback.
        columns = "tenant, message_id, kind, body"
        written: Sequence[tuple[object, ...]] = rows
        if generation is not None:
            columns = "generation, " + columns
            written = [(generation, *row) for row in rows]
        copy_sql = f"COPY {self.schema}.messages ({columns}) FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.set_types(_COPY_TYPES if generation is None else ("int8", *_COPY_TYPES))
            for row in written:
                copy.write_row(row)

    def lease(self, tenant: str, max_messages: int, max_bytes: int) -> Lease | None:
        """Up to ``max_messages`` of ``tenant``'s oldest rows that nobody holds (or whose
        holder's lease expired), within ``max_bytes``; one short transaction."""
        self._write_unwritten()
        sql = f"""
            WITH picked AS (
                SELECT generation, id FROM {self.schema}.messages
                WHERE tenant = %(tenant)s AND (owner IS NULL OR lease_until < now())
                    AND (SELECT set_config('idle_in_transaction_session_timeout',
                        %(idle)s, true)) IS NOT NULL
                ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            UPDATE {self.schema}.messages AS m
            SET owner = %(owner)s, lease_until = now() + make_interval(secs => %(secs)s)
            FROM picked WHERE m.generation = picked.generation AND m.id = picked.id
            RETURNING m.id, m.generation, m.message_id, m.kind, m.body
        """
        with self._lock:
            self._leases += 1
            owner = f"{self.owner}#{self._lease_tag}.{self._leases}"
        params = {
            "tenant": tenant,
            "limit": max_messages,
            "owner": owner,
            "secs": self.lease_seconds,
            # The rows stay locked until the commit, with records decoded meanwhile:
            # should this host die or its network go silent then, the server ends the
            # session (its locks with it) once idle this long (half the lease, a second at
            # least), before the lease runs out; else other hosts' SKIP LOCKED would pass
            # the rows by long after it did. Set in the statement: no round trip more.
            "idle": str(max(1000, int(self.lease_seconds * 500))),
        }

        def pick(conn: psycopg.Connection[Any]) -> _Picked:
            with conn.transaction():  # BEGIN ISOLATION LEVEL READ COMMITTED (_read_committed)
                rows = sorted(conn.execute(sql, params).fetchall())  # the queue's order: by id
            taken: list[tuple[_RowId, EncodedMessage]] = []
            dead: list[_Dead] = []
            errors: list[InvalidEvent] = []
            size = 0
            end = len(rows)
            for index, (rowid, generation, message_id, kind, column) in enumerate(rows):
                body = bytes(column)
                if message_id:
                    message = EncodedMessage(tenant, message_id, _KINDS.get(kind, kind), body)
                else:  # a record (see _postgres_record): it becomes its message now
                    try:
                        message = decode(tenant, body)
                    except InvalidEvent as exc:
                        dead.append(((generation, rowid), "", body, _dead_reason(exc)))
                        errors.append(exc)
                        continue
                cost = len(message.body) + 1
                if taken and size + cost > max_bytes:
                    end = index
                    break
                taken.append(((generation, rowid), message))
                size += cost
            back = [(row[1], row[0]) for row in rows[end:]]
            if back:
                conn.execute(
                    f"UPDATE {self.schema}.messages SET owner = NULL, lease_until = NULL "
                    f"WHERE {_ROWS_IN}",
                    _row_params(back),
                )
            if dead:
                self._bury(conn, owner, dead, None)
            return taken, dead, errors

        # Rows that were all dead letters: the next ones may be messages; a few rounds at
        # most (a long run of damaged rows is worked through over the next turns).
        for _ in range(DEAD_ROUNDS):
            taken, dead, errors = self._with(pick, transaction=True)
            tell_buried(self._on_buried, tenant, errors)  # buried and committed: once each
            if dead:  # one line per round, however many rows
                reason = dead[0][3]
                log.error(
                    "tenant %s: %d events kept as dead letters: %s%s",
                    shown(tenant),
                    len(dead),
                    reason,
                    f" (and {len(dead) - 1} more)" if len(dead) > 1 else "",
                    extra={"tenant": tenant, "reason": reason.partition(":")[0]},
                )
            self._count([tenant] * len(dead), -1)
            if taken or not dead:
                break
        if not taken:
            with self._lock:
                self._backlog[tenant] = 0
                self._many.discard(tenant)
            return None
        lease = Lease(tenant, tuple(message for _, message in taken))
        self._count([tenant] * len(taken), -1)
        with self._lock:
            self._held[lease.id] = _Held(
                owner, {id(m): rowid for (rowid, _), m in zip(taken, lease.messages, strict=True)}
            )
        return lease

    def _rowids(
        self, lease: Lease, messages: Sequence[EncodedMessage]
    ) -> tuple[str, tuple[_RowId, ...]]:
        """The lease's owner and the rows of ``messages``, taken out of the live lease."""
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
            return held.owner, rowids

    def _bury(
        self,
        conn: psycopg.Connection[Any],
        owner: str,
        dead: Sequence[_Dead],
        status: int | None,
    ) -> None:
        """Move the rows ``dead`` of the lease ``owner`` into ``dead_letters``, each with the
        message id, body and reason given (the message as leased, or a damaged record as
        it is), in the queue's order; each reason as ``text`` holds it (:func:`pg_text`)."""
        s = self.schema
        sql = f"""WITH dead AS (
                SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %b::bytea[],
                    %s::text[]) AS d(generation, id, message_id, body, reason)),
            gone AS (
                DELETE FROM {s}.messages AS m USING dead AS d
                WHERE m.generation = d.generation AND m.id = d.id AND m.owner = %s
                RETURNING m.id, m.tenant, d.message_id, m.kind, d.body, m.accepted_at, d.reason)
            INSERT INTO {s}.dead_letters
                (tenant, message_id, kind, body, accepted_at, reason, status)
            SELECT tenant, message_id, kind, body, accepted_at, reason, %s FROM gone ORDER BY id"""
        generations, ids = _row_params([d[0] for d in dead])
        columns = ([d[1] for d in dead], [d[2] for d in dead], [pg_text(d[3]) for d in dead])
        conn.execute(sql, (generations, ids, *columns, owner, status))

    def _settle(
        self,
        action: str,
        owner: str,
        rowids: tuple[_RowId, ...],
        reason: str | None,
        status: int | None,
        leased: tuple[EncodedMessage, ...] = (),
    ) -> None:
        s = self.schema
        rows: tuple[object, ...] = (*_row_params(rowids), owner)
        if action == "reject":  # the messages as leased: a row may still hold a record
            dead = [
                (rowid, m.message_id, m.body, reason or "")
                for rowid, m in zip(rowids, leased, strict=True)
            ]
            self._with(lambda conn: self._bury(conn, owner, dead, status), transaction=True)
            return
        if action == "ack":
            sql = f"DELETE FROM {s}.messages WHERE {_ROWS_IN} AND owner = %s"
        else:
            sql = (
                f"UPDATE {s}.messages SET owner = NULL, lease_until = NULL "
                f"WHERE {_ROWS_IN} AND owner = %s"
            )
        self._with(lambda conn: conn.execute(sql, rows), transaction=True)

    def _settle_or_keep(
        self,
        action: str,
        rows: tuple[str, tuple[_RowId, ...]],
        reason: str | None = None,
        status: int | None = None,
        leased: tuple[EncodedMessage, ...] = (),
    ) -> None:
        """Write a settlement of ``rows`` (the lease's owner and row ids) now; while the
        database is unreachable, keep it in memory for :meth:`_write_unwritten`. Never
        raises."""
        if reason is not None:
            reason = pg_text(reason)
        settlement: _Settlement = (action, *rows, reason, status, leased)
        unreachable = self._settled(settlement)
        if unreachable is not None:
            with self._lock:
                self._unwritten.append(settlement)
            log.error("settlement kept in memory until the database answers: %s", unreachable)

    def _settled(self, settlement: _Settlement) -> Unreachable | None:
        """Write ``settlement``: None once written or given up, the error while the
        database is unreachable (the caller keeps it). Any other failure (the statement
        or its data refused) would fail again, so it never holds back the settlements
        after it: a reject is written once more with a plain reason
        (:func:`_plain_reason`); failing that, it is logged at ERROR and given up, its
        rows left in the queue under their lease, which expires: they are leased and sent
        again then, never lost."""
        action, owner, rowids, reason, status, leased = settlement
        try:
            self._settle(action, owner, rowids, reason, status, leased)
            return None
        except Unreachable as exc:
            return exc
        except Exception as exc:
            failure: Exception = exc
        if action == "reject":
            plain = _plain_reason(reason)
            try:
                self._settle(action, owner, rowids, plain, status, leased)
                log.error("dead letters written with the reason %r: %s", plain, failure)
                return None
            except Unreachable as exc:
                return exc
            except Exception as exc:
                failure = exc
        log.error(
            "%s of %d rows not written, left in the queue until their lease expires "
            "(then sent again): %s",
            action,
            len(rowids),
            failure,
        )
        return None

    def _write_unwritten(self) -> None:
        """Write the settlements kept while the database was unreachable, in order;
        raises :class:`Unreachable` (the rest kept) while it still is."""
        with self._lock:
            pending, self._unwritten = self._unwritten, []
        for index, settlement in enumerate(pending):
            unreachable = self._settled(settlement)
            if unreachable is not None:
                with self._lock:
                    self._unwritten[:0] = pending[index:]
                raise unreachable

    def ack(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Delete ``messages``: Segment accepted them."""
        self._settle_or_keep("ack", self._rowids(lease, messages))

    def release(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        """Give ``messages`` back to the queue, at their old place (ids keep the order)."""
        self._settle_or_keep("release", self._rowids(lease, messages))
        self._count([m.tenant for m in messages], 1)

    def reject(
        self, lease: Lease, messages: Sequence[EncodedMessage], reason: str, status: int | None
    ) -> None:
        """Move ``messages`` to ``dead_letters`` with ``reason`` and ``status``, as they
        were leased (messageId and body: a row that held a record keeps its message, so
        ``dead-letters list`` shows it and ``requeue`` sends it)."""
        rowids = self._rowids(lease, messages)
        self._settle_or_keep("reject", rowids, reason, status, tuple(messages))

    def maintain(self) -> None:
        """Write the settlements kept while the database could not be reached; rotate the
        queue's partitions when due (:meth:`rotate`); fold the queue's count deltas
        (:func:`compact_counts`: one process at a time, the others skip)."""
        self._write_unwritten()
        now = time.monotonic()
        if now >= self._next_rotate:
            self._next_rotate = now + min(self.rotate_seconds, 10.0)
            self.rotate()
        self._with(lambda conn: compact_counts(conn, self.schema))

    def rotate(self, *, force: bool = False) -> int:
        """Keep the queue table healthy without relying on vacuum: new rows go to a new
        partition every ``rotate_seconds`` (or now, with ``force``), and every older
        partition that is drained is dropped whole, its dead rows with it, so a
        long-running transaction elsewhere (which stops vacuum from reclaiming deleted
        rows) costs at most the partitions it holds open, never an ever-growing table.

        One process rotates at a time: each step (the attach, each drop) is one transaction
        that first takes ``pg_try_advisory_xact_lock`` (another process holding it means
        this one skips the rest of the round), so nothing outlives its transaction, behind
        a pooler in transaction mode too. A partition is dropped only once this process
        holds it, and the whole queue (a DROP needs ACCESS EXCLUSIVE on ``messages``),
        exclusively and finds it empty, so a row being inserted or leased there is never
        lost. The drop never queues behind a transaction that holds the queue and is not
        running a short statement (idle in a transaction, as an open outbox or an
        operator's ``BEGIN``, or in it for over a second: :meth:`_drop_wait`): every
        insert and lease would queue behind the drop. The round then stops, as it does at
        the first lock not granted (within 50 ms, or at once, ``NOWAIT``, while the
        holders cannot be seen), and the next round tries again. Nor is one dropped while
        another session holds a snapshot older than the rotation that retired it
        (:meth:`_may_be_named`): an outbox insert in a REPEATABLE READ or SERIALIZABLE
        transaction reads the generation with that snapshot, and finds its partition.
        Returns how many partitions were dropped.
        """
        attached = self._with(lambda conn: self._attach(conn, force))
        if attached is None:
            return 0
        generation, partitions = attached
        dropped = 0
        for name in partitions:
            if int(name.rsplit("_", 1)[1]) >= generation:
                continue
            outcome = self._with(functools.partial(self._drop, name=name))
            if outcome is None:
                break  # a lock not granted (or another process rotating): the next round
            dropped += outcome
        return dropped

    def _rotation_lock(self, conn: psycopg.Connection[Any]) -> bool:
        """In ``conn``'s open transaction: True once it holds the rotation's advisory lock
        until its end; False when another process holds it."""
        key = f"{self.schema}:rotate"
        row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (key,)).fetchone()
        return bool(row and row[0])

    def _attach(self, conn: psycopg.Connection[Any], force: bool) -> tuple[int, list[str]] | None:
        """The rotation's first step, one transaction: attach a new partition when due
        (or ``force``); the generation new rows now go to and the partitions as they were
        before (the new one is never retired). None: another process is rotating."""
        s = self.schema
        with conn.transaction():
            if not self._rotation_lock(conn):
                return None
            row = conn.execute(
                f"SELECT generation, extract(epoch FROM now() - rotated_at) FROM {s}.meta"
            ).fetchone()
            assert row is not None
            generation, age = int(row[0]), float(row[1])
            partitions = self._partitions(conn)
            due = age >= self.rotate_seconds and len(partitions) < MAX_PARTITIONS
            if not (force or due):
                return generation, partitions
            # CREATE TABLE ... PARTITION OF would lock the whole queue (ACCESS EXCLUSIVE on
            # the parent) behind any open transaction that touched it; ATTACH PARTITION
            # takes SHARE UPDATE EXCLUSIVE, which inserts, leases and readers never wait on.
            new = generation + 1
            try:
                with conn.transaction():  # a savepoint: a lock not granted undoes only this
                    conn.execute("SET LOCAL lock_timeout = '50ms'")
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {s}.messages_{new} "
                        f"(LIKE {s}.messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                        "INCLUDING STORAGE)"
                    )
                    conn.execute(
                        f"ALTER TABLE {s}.messages ATTACH PARTITION {s}.messages_{new} "
                        f"FOR VALUES IN ({new})"
                    )
                    conn.execute(f"UPDATE {s}.meta SET generation = %s, rotated_at = now()", (new,))
            except self._psycopg.errors.LockNotAvailable:
                return generation, partitions  # someone holds the queue so: next round
        self._generation = new
        return new, partitions

    def _drop(self, conn: psycopg.Connection[Any], *, name: str) -> int | None:
        """Drop the retired partition ``name`` when drained (1), or leave it (0: rows in
        it, gone already, or a snapshot may name it); None: a lock was not granted, or
        another process is rotating (the round stops there). Its own transaction."""
        s = self.schema
        # Looked at first without holding the queue: a partition with rows is passed by at
        # no cost to the writers (this also prunes a drained one's dead rows, so the look
        # again under the lock is short).
        if conn.execute(f"SELECT to_regclass('{s}.{name}')").fetchone() == (None,):
            return 0  # dropped by another process
        if conn.execute(f"SELECT 1 FROM {s}.{name} LIMIT 1").fetchone() is not None:
            return 0
        try:
            with conn.transaction():
                if not self._rotation_lock(conn):
                    return None
                if conn.execute(f"SELECT to_regclass('{s}.{name}')").fetchone() == (None,):
                    return 0  # another process dropped it meanwhile
                if self._may_be_named(conn, name):
                    return 0
                wait = self._drop_wait(conn, name)
                if wait is None:
                    return None
                conn.execute(f"SET LOCAL lock_timeout = '{wait}'")
                conn.execute(
                    f"LOCK TABLE {s}.messages, {s}.{name} IN ACCESS EXCLUSIVE MODE"
                    + (" NOWAIT" if wait == "0" else "")
                )
                if conn.execute(f"SELECT 1 FROM {s}.{name} LIMIT 1").fetchone() is not None:
                    return 0
                conn.execute(f"DROP TABLE {s}.{name}")
                return 1
        except self._psycopg.errors.LockNotAvailable:
            return None

    def _drop_wait(self, conn: psycopg.Connection[Any], name: str) -> str | None:
        """How long the drop of ``name`` may wait for its locks: None (not at all: the round
        stops) while another transaction holding the queue or the partition will not end
        soon: idle in a transaction (an open outbox, an operator's ``BEGIN``), in one for
        over a second, or a prepared transaction; ``"0"`` (``NOWAIT``) while a holder's
        state cannot be seen (another role's session, without ``pg_read_all_stats``);
        else ``"50ms"``, for the short statements that hold it to end. Inserts and leases
        queue behind a drop waiting for its lock: it never waits on a holder that
        stays."""
        row = conn.execute(
            "SELECT coalesce(bool_or(l.pid IS NULL OR a.state LIKE 'idle in transaction%%' "
            "OR a.xact_start < clock_timestamp() - interval '1 second'), false), "
            "coalesce(bool_or(l.pid IS NOT NULL AND a.state IS NULL), false) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'relation' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.relation IN (%s::regclass, %s::regclass) "
            "AND l.pid IS DISTINCT FROM pg_backend_pid()",
            (f"{self.schema}.messages", f"{self.schema}.{name}"),
        ).fetchone()
        stays, unseen = (bool(row[0]), bool(row[1])) if row else (False, False)
        if stays:
            return None
        return "0" if unseen else "50ms"

    def _partitions(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The names of the queue's partitions (``messages_G``)."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'messages'",
            (self.schema,),
        ).fetchall()
        return [name for (name,) in rows]

    def _may_be_named(self, conn: psycopg.Connection[Any], name: str) -> bool:
        """True while another session of this database may hold a snapshot taken before
        the rotation that retired partition ``name`` (generation g) committed: its
        ``backend_xmin`` is not after that rotation's transaction, which created the
        partition of g + 1 (its ``pg_class`` row's ``xmin``; the ``meta`` row's, the last
        rotation's, when that partition is not found). A REPEATABLE READ or SERIALIZABLE
        transaction reads the generation with its snapshot, so an outbox insert there may
        still name g, whose partition must exist until it ends. A session older than a
        later rotation only holds back the partitions it may name."""
        s = self.schema
        successor = f"messages_{int(name.rsplit('_', 1)[1]) + 1}"
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = "
            "current_database() AND a.pid <> pg_backend_pid() AND a.backend_xmin IS NOT NULL "
            "AND age(a.backend_xmin) >= age(coalesce("
            "(SELECT c.xmin FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s), "
            f"(SELECT m.xmin FROM {s}.meta m))))",
            (s, successor),
        ).fetchone()
        return bool(row and row[0])

    def empty(self) -> bool:
        """True when no row is queued or leased, by anyone; False while the database
        cannot be asked (never raises). From the counts (``queue_counts``), not the queue:
        a partition's first live row may lie behind every row deleted since its vacuum."""
        try:
            sql = (
                f"SELECT NOT EXISTS (SELECT 1 FROM {self.schema}.queue_counts "
                "GROUP BY tenant HAVING sum(n) <> 0)"
            )
            row = self._with(lambda conn: conn.execute(sql).fetchone())
        except SpoolError:
            return False
        return bool(row and row[0]) and not self._held

    def backlog(self, tenant: str) -> int:
        """Rows of ``tenant`` a sender may lease, as last counted by :meth:`tenants` (up to
        :data:`COUNT_CAP`: a tenant counted at the cap stays there until a lease of it
        comes back empty) and kept up to date with this process's own work (other hosts'
        rows show at the next count). Never asks the database, never raises."""
        return self._backlog.get(tenant, 0)

    def tenants(self) -> list[str]:
        """Tenants with rows a sender may lease now; refreshes the counts :meth:`backlog`
        answers from. One statement that reads no more than it needs: the tenants by a
        loose scan of the ``(tenant, id)`` index (one index descent per tenant, however
        many rows each holds), and for each the leasable rows counted up to
        :data:`COUNT_CAP` (enough to tell a full batch), never a scan of the table."""
        s = self.schema
        sql = f"""
            WITH RECURSIVE queued(tenant) AS (
                (SELECT tenant FROM {s}.messages ORDER BY tenant LIMIT 1)
                UNION ALL
                SELECT (SELECT m.tenant FROM {s}.messages m WHERE m.tenant > queued.tenant
                        ORDER BY m.tenant LIMIT 1)
                FROM queued WHERE queued.tenant IS NOT NULL
            )
            SELECT tenant, (
                SELECT count(*) FROM (
                    SELECT 1 FROM {s}.messages m WHERE m.tenant = queued.tenant
                    AND (m.owner IS NULL OR m.lease_until < now()) LIMIT %(cap)s) AS head
            ) FROM queued WHERE tenant IS NOT NULL
        """
        params = {"cap": COUNT_CAP}

        def read(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            generation = conn.execute(f"SELECT generation FROM {s}.meta").fetchone()
            self._generation = None if generation is None else int(generation[0])
            return conn.execute(sql, params, prepare=self._prepare).fetchall()

        rows = self._with(read)
        counts = {row[0]: int(row[1]) for row in rows if row[1]}
        with self._lock:
            self._backlog = counts
            self._many = {t for t, n in counts.items() if n >= COUNT_CAP}
        return sorted(counts)

    def stats(self) -> SpoolStats:
        """One snapshot of the whole queue (every host's committed rows); the last one
        taken while the database cannot be asked (never raises).

        Without reading the queue: the counts and bytes per tenant are the sums of
        ``queue_counts`` (kept by the database's triggers, one row per tenant once
        compacted), the live leases are counted through the index of leased rows; its
        cost follows the tenants and the rows in flight, not the backlog."""
        try:
            sql = f"SELECT tenant, queued, nbytes, leased FROM {self.schema}.queue_totals()"
            rows = self._with(lambda conn: conn.execute(sql, prepare=self._prepare).fetchall())
        except SpoolError:
            return self._last_stats
        self._last_stats = SpoolStats(
            messages=sum(r[1] for r in rows),
            nbytes=sum(int(r[2]) for r in rows),
            leased=sum(r[3] for r in rows),
            per_tenant={r[0]: r[1] for r in rows},
        )
        return self._last_stats

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

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        """Record (or clear, with None) that ``tenant`` is paused, for every host to see;
        a database error is logged, never raised (the pause itself holds in memory)."""
        s = self.schema
        try:
            with self._connection() as conn:
                if reason is None:
                    conn.execute(f"DELETE FROM {s}.paused WHERE tenant = %s", (tenant,))
                else:
                    conn.execute(
                        f"INSERT INTO {s}.paused (tenant, reason) VALUES (%s, %s) "
                        "ON CONFLICT (tenant) DO UPDATE SET reason = excluded.reason, "
                        "since = now()",
                        (tenant, pg_text(reason)),
                    )
        except SpoolError as exc:
            log.warning("could not record a paused tenant: %s", exc)

    def note_error(self, tenant: str, text: str, at: float, status: int | None) -> None:
        """Record ``tenant``'s last delivery error (key-free text, Unix time, HTTP status)
        for every host's ``spool status``. Best effort, never raises: a note the database
        cannot take now is logged and dropped (the next error writes its own)."""
        s = self.schema
        try:
            with self._connection() as conn:
                conn.execute(
                    f"INSERT INTO {s}.last_errors (tenant, text, at, status) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET "
                    "text = excluded.text, at = excluded.at, status = excluded.status",
                    (tenant, pg_text(text), at, status),
                )
        except SpoolError as exc:
            log.warning("could not record a tenant's last delivery error: %s", exc)

    def paused(self) -> dict[str, str]:
        """Paused tenants and why, as recorded by any host."""
        with self._connection() as conn:
            rows = conn.execute(f"SELECT tenant, reason FROM {self.schema}.paused").fetchall()
        return {r[0]: r[1] for r in rows}

    def abandon(self) -> None:
        """In a forked child: forget the parent's connections and leases without touching
        them (closing a connection shared with the parent would end the parent's session)."""
        with self._lock:
            self._idle = []
            self._held = {}
            self._unwritten = []
            # The child's leases are not the parent's, nor numbered apart from them.
            self.owner = f"{self.owner}/{os.getpid()}"
            self._lease_tag = secrets.token_hex(4)

    def close(self) -> None:
        """Write the settlements kept while the database could not be reached, give back
        this process's live leases (both best effort: what cannot be written is said,
        and its rows are leased again when their lease runs out) and close the
        connections."""
        with suppress(SpoolError):
            self._write_unwritten()
        with self._lock:
            unwritten, self._unwritten = len(self._unwritten), []
        if unwritten:
            log.warning(
                "%d settlements of leased events could not be written before the close; "
                "their events are sent again once their lease runs out",
                unwritten,
                extra={"reason": "spool_error", "count": unwritten},
            )
        with self._lock:
            held, self._held = self._held, {}
        for lease in held.values():
            if not lease.rowids:
                continue
            try:
                self._settle("release", lease.owner, tuple(lease.rowids.values()), None, None)
            except SpoolError as exc:
                log.warning("leases left to expire: %s", exc)
                break  # the database is away: the others' would fail the same way
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
