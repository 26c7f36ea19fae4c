"""The statements that write and read many rows of the SQLite queue at once, and the rows
they take (:class:`DeadMessage`, :data:`JournalRecord`).

Guarantee: each function runs inside the caller's transaction (or read snapshot) and
changes only what its docstring says. Rows go in and come out many to a statement, never
one step per row (see ``_ROWS_PER_INSERT`` for why and what it buys).
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import attrs
import orjson

from selligent_segment._mapping import EncodedMessage

__all__ = [
    "DeadMessage",
    "HeadColumns",
    "JournalRecord",
    "bury",
    "execute_in_parts",
    "head",
    "head_columns",
    "ids",
    "insert_dead",
    "insert_in_parts",
    "insert_messages",
    "insert_messages_sql",
    "insert_owned_sql",
    "insert_records_sql",
    "kind_of",
    "parts",
    "reject_sql",
]


@attrs.frozen
class DeadMessage:
    """An accepted record that can never be sent, to keep as a dead letter."""

    tenant: str
    message_id: str
    kind: str
    body: bytes = attrs.field(repr=False)  # email addresses: never in a repr
    reason: str


#: A journal record as it goes into the file: (tenant, kind, payload).
JournalRecord = tuple[str, str, "bytes | memoryview"]


def kind_of(kind: object) -> str:
    """The ``kind`` column of a message's kind (an ``EventKind`` or its value)."""
    return str(getattr(kind, "value", kind))


def ids(rowids: Iterable[int]) -> str:
    """Row ids as the JSON array a ``json_each(?)`` parameter takes."""
    return json.dumps(list(rowids))


# Records go in with one INSERT of many rows, not executemany: the sqlite3 module lets go
# of the GIL for every step, and with another thread busy in Python each step then waits
# up to sys.getswitchinterval() (5 ms) to get it back. Measured with a busy thread beside
# it, executemany moved ~200 rows/s; one statement per 1,024 rows moves ~40,000.
_ROWS_PER_INSERT = 1024
# Parts are 1,024 rows, then powers of two: at most 11 statement sizes, each compiled once
# and then taken from the connection's statement cache. With a part of any size, most
# chunks compiled a new statement, and compiling one with n numbered parameters costs
# O(n^2) in SQLite (sqlite3VListNumToName): 17,000 instructions per event ingested
# (callgrind, the durable emit path), now gone.
_SIZES = 11  # 1,024 = 2**10


def parts(n: int) -> list[int]:
    """The sizes ``n`` rows are written in, in order: ``_ROWS_PER_INSERT`` rows while they
    last, then decreasing powers of two: at most ``_SIZES`` sizes in all, so each
    statement size is prepared once and then reused from the statement cache."""
    sizes = [_ROWS_PER_INSERT] * (n // _ROWS_PER_INSERT)
    left = n % _ROWS_PER_INSERT
    while left:
        size = 1 << (left.bit_length() - 1)
        sizes.append(size)
        left -= size
    return sizes


def insert_in_parts(
    db: sqlite3.Connection, sql: Callable[[int], str], rows: Sequence[Sequence[object]]
) -> None:
    """Run ``sql(n)`` once per part of :func:`parts`, in order; its parameters are each
    row's values in turn. The statements take anonymous ``?`` parameters only: SQLite
    looks up each numbered one (``?NNN``) in a list of them, as it prepares the statement
    and as it binds, which made a 1,000-row INSERT with ``?1`` shared by its rows cost
    about 20 times what it costs with ``?`` (measured: 57 against 2.4 ms)."""
    start = 0
    for size in parts(len(rows)):
        db.execute(sql(size), list(itertools.chain.from_iterable(rows[start : start + size])))
        start += size


@functools.lru_cache(maxsize=_SIZES)
def insert_records_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` journal records: per row, the tenant, kind, payload and
    acceptance time."""
    sql = "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) VALUES "
    return sql + ", ".join(["(?, '', ?, ?, ?)"] * rows)


@functools.lru_cache(maxsize=_SIZES)
def reject_sql(rows: int) -> str:
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


def execute_in_parts(
    db: sqlite3.Connection,
    sql: Callable[[int], str],
    shared: Sequence[object],
    rows: Sequence[Sequence[object]],
) -> None:
    """Run ``sql(n)`` once per part of :func:`parts`; its parameters are ``shared``, then
    each row's values in turn."""
    start = 0
    for size in parts(len(rows)):
        db.execute(sql(size), [*shared, *itertools.chain.from_iterable(rows[start : start + size])])
        start += size


@functools.lru_cache(maxsize=_SIZES)
def insert_messages_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` encoded messages: per row, the tenant, message id, kind,
    body and acceptance time."""
    sql = "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) VALUES "
    return sql + ", ".join(["(?, ?, ?, ?, ?)"] * rows)


@functools.lru_cache(maxsize=_SIZES)
def insert_owned_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` encoded messages leased from the start: per row, the row id,
    tenant, message id, kind, body, acceptance time and owner."""
    sql = "INSERT INTO messages (id, tenant, message_id, kind, body, accepted_at, owner) VALUES "
    return sql + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)


def insert_messages(
    db: sqlite3.Connection,
    messages: Sequence[EncodedMessage],
    now: float,
    *,
    first: int | None = None,
    owner: str | None = None,
) -> None:
    """Queue ``messages`` (encoded), accepted at ``now``, in their order (many rows to a
    statement, as journal records: see ``_ROWS_PER_INSERT``). With ``first`` and ``owner``
    they take the row ids from ``first`` on (free ones: the caller knows) and are leased
    to ``owner`` from the start."""
    kinds = [m.kind if type(m.kind) is str else kind_of(m.kind) for m in messages]
    if owner is None or first is None:
        rows: list[tuple[object, ...]] = [
            (m.tenant, m.message_id, kind, m.body, now)
            for m, kind in zip(messages, kinds, strict=True)
        ]
        insert_in_parts(db, insert_messages_sql, rows)
        return
    rows = [
        (rowid, m.tenant, m.message_id, kind, m.body, now, owner)
        for rowid, m, kind in zip(itertools.count(first), messages, kinds, strict=False)
    ]
    insert_in_parts(db, insert_owned_sql, rows)


def insert_dead(db: sqlite3.Connection, dead: Sequence[DeadMessage], now: float) -> None:
    """Keep ``dead`` as dead letters, accepted and failed at ``now``."""
    db.executemany(
        "INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, failed_at, "
        "reason, status) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        [(d.tenant, d.message_id, d.kind, d.body, now, now, d.reason) for d in dead],
    )


def bury(db: sqlite3.Connection, dead: dict[int, DeadMessage], stamps: dict[int, float]) -> None:
    """Move journal records that cannot become messages (by row id) to ``dead_letters``;
    a row with an acceptance time in ``stamps`` moves only if it still has that time."""
    rows = [(rowid, stamps.get(rowid), time.time(), d.reason) for rowid, d in dead.items()]
    db.executemany(
        "INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, "
        "failed_at, reason, status) SELECT tenant, '', kind, body, accepted_at, ?3, ?4, "
        "NULL FROM messages WHERE id = ?1 AND (?2 IS NULL OR accepted_at = ?2)",
        rows,
    )
    db.executemany(
        "DELETE FROM messages WHERE id = ?1 AND (?2 IS NULL OR accepted_at = ?2)",
        [row[:2] for row in rows],
    )


_HEAD = (
    "SELECT json_group_array(id), json_group_array(message_id), json_group_array(kind), "
    "json_group_array(length(body)), CAST(group_concat(body, '') AS BLOB) FROM "
    "(SELECT id, message_id, kind, body FROM messages "
    "WHERE tenant = ? AND owner IS NULL ORDER BY id LIMIT ?)"
)
_HEAD_SKIPPING = (
    "SELECT json_group_array(id), json_group_array(message_id), json_group_array(kind), "
    "json_group_array(length(body)), CAST(group_concat(body, '') AS BLOB) FROM "
    "(SELECT id, message_id, kind, body FROM messages WHERE tenant = ? AND owner IS NULL "
    "AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
)


#: The head of a queue as :func:`head_columns` reads it: row ids, message ids, kinds, body
#: sizes, and the bodies end to end.
HeadColumns = tuple[list[int], list[str], list[str], list[int], bytes]


def head_columns(
    db: sqlite3.Connection, tenant: str, limit: int, skip: Collection[int] = ()
) -> HeadColumns:
    """The first ``limit`` unleased rows of ``tenant`` but those in ``skip``, column by
    column: (ids, message_ids, kinds, body sizes, the bodies concatenated).

    One aggregate row instead of a row per message: fetching steps once per row, and every
    step lets go of the GIL (see _ROWS_PER_INSERT), so a busy thread slows each one down.
    """
    if skip:
        found = db.execute(_HEAD_SKIPPING, (tenant, ids(skip), limit))
    else:
        found = db.execute(_HEAD, (tenant, limit))
    rowids, message_ids, kinds, sizes, bodies = found.fetchone()
    return (
        orjson.loads(rowids),
        orjson.loads(message_ids),
        orjson.loads(kinds),
        orjson.loads(sizes),
        bodies or b"",
    )


def head(
    db: sqlite3.Connection, tenant: str, limit: int, skip: Collection[int] = ()
) -> list[tuple[int, str, str, bytes]]:
    """The rows of :func:`head_columns` one by one: (id, message_id, kind, body)."""
    rowids, message_ids, kinds, sizes, bodies = head_columns(db, tenant, limit, skip)
    rows: list[tuple[int, str, str, bytes]] = []
    pos = 0
    for rowid, message_id, kind, size in zip(rowids, message_ids, kinds, sizes, strict=True):
        rows.append((rowid, message_id, kind, bodies[pos : pos + size]))
        pos += size
    return rows
