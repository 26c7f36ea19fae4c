"""The spool's fast lease paths equal the plain ones they stand for: a lease of encoded
messages taken column by column (``_pick_messages``) equals the row-by-row pick
(``_pick_rows``), and settling a whole lease at once gives the row ids settling it message
by message gives; inserts in parts of a few sizes equal one insert per row."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.spool._sqlite import (
    SqliteSpool,
    _Pick,
    _pick_kept,
    _pick_messages,
    _pick_rows,
)
from selligent_segment.spool._statements import (
    insert_in_parts,
    insert_messages,
    insert_records_sql,
    kind_of,
    parts,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = st.sampled_from([*(k.value for k in EventKind), "identify", "track"])
ROWS = st.lists(
    st.tuples(st.text(min_size=1, max_size=6), KINDS, st.binary(max_size=40)),
    max_size=30,
)


def _never(_: bytes) -> EncodedMessage:
    raise SelligentSegmentError("no record here")


def _shape(pick: _Pick) -> tuple[object, ...]:
    return (
        pick.read,
        [(m.tenant, m.message_id, m.kind, m.body) for m in pick.taken],
        [pick.rowids[id(m)] for m in pick.taken],
        list(pick.rowids.values()),
        pick.fresh,
        pick.back,
        pick.kept,
        pick.seen,
        pick.dead,
    )


@SETTINGS
@given(
    rows=ROWS,
    first_id=st.integers(1, 1000),
    max_messages=st.integers(1, 40),
    max_bytes=st.integers(0, 600),
)
def test_a_lease_of_messages_taken_by_columns_equals_the_row_by_row_pick(
    rows: list[tuple[str, str, bytes]], first_id: int, max_messages: int, max_bytes: int
) -> None:
    rows = rows[:max_messages]  # the head query reads at most max_messages rows
    rowids = list(range(first_id, first_id + 2 * len(rows), 2))
    message_ids = [mid for mid, _, _ in rows]
    kinds = [kind for _, kind, _ in rows]
    bodies = [body for _, _, body in rows]
    columns = (rowids, message_ids, kinds, [len(b) for b in bodies], b"".join(bodies))
    entries = list(zip(rowids, message_ids, kinds, bodies, strict=True))
    if not rows:
        return  # the head of an empty queue: no lease either way
    fast = _pick_messages("acme", columns, max_messages, max_bytes)
    plain = _pick_rows("acme", entries, len(entries), max_messages, max_bytes, _never)
    assert _shape(fast) == _shape(plain)
    assert [type(m.kind) for m in fast.taken] == [type(m.kind) for m in plain.taken]


@SETTINGS
@given(
    rows=ROWS.filter(bool),
    first_id=st.integers(1, 1000),
    max_messages=st.integers(1, 40),
    max_bytes=st.integers(0, 600),
)
def test_a_lease_of_kept_rows_equals_the_row_by_row_pick(
    rows: list[tuple[str, str, bytes]], first_id: int, max_messages: int, max_bytes: int
) -> None:
    # Rows kept at put_many: messages already (the same objects go out), leased to this
    # process in the file already (none fresh, none counted as read from the file).
    kinds = {k.value: k for k in EventKind}
    kept = [
        (first_id + 2 * i, EncodedMessage("acme", mid, kinds.get(kind, kind), body))
        for i, (mid, kind, body) in enumerate(rows)
    ]
    entries = [(r, m.message_id, kind_of(m.kind), m.body) for r, m in kept]
    mine = dict.fromkeys(r for r, _ in kept)
    fast = _pick_kept(kept, max_messages, max_bytes)
    plain = _pick_rows("acme", entries, 0, max_messages, max_bytes, _never, None, mine)
    assert _shape(fast) == _shape(plain)
    assert fast.taken == [m for _, m in kept[: len(fast.taken)]]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), max_messages=st.integers(1, 40), partial=st.booleans())
def test_settling_a_whole_lease_gives_the_row_ids_message_by_message_gives(
    tmp_path_factory: pytest.TempPathFactory, n: int, max_messages: int, partial: bool
) -> None:
    path = tmp_path_factory.mktemp("spool") / "s.db"
    spool = SqliteSpool(path, max_bytes=1 << 24, decoder=_never)
    try:
        spool.put_many([EncodedMessage("acme", f"m{i}", "track", b"{}") for i in range(n)])
        lease = spool.lease("acme", max_messages, 1 << 20)
        assert lease is not None
        held = spool._leases[lease.id]
        expected = [held[id(m)] for m in lease.messages]
        if partial and len(lease.messages) > 1:  # the row-by-row path, then the rest
            first, rest = lease.messages[:1], lease.messages[1:]
            got = spool._take(lease, first) + spool._take(lease, rest)
        else:
            got = spool._take(lease, lease.messages)
        assert got == expected
        assert lease.id not in spool._leases
        assert expected == sorted(expected)  # acceptance order
    finally:
        spool.close()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000))
def test_inserts_go_in_parts_of_a_few_sizes_that_add_up(n: int) -> None:
    sizes = parts(n)
    assert sum(sizes) == n
    assert all(size > 0 for size in sizes)
    assert set(sizes) <= {1 << k for k in range(11)}  # 11 statement sizes at most
    assert sizes == sorted(sizes, reverse=True)


@settings(max_examples=40, deadline=None)
@given(
    messages=st.lists(
        st.builds(
            EncodedMessage,
            st.sampled_from(["acme", "globex"]),
            st.text(max_size=5),
            st.sampled_from([EventKind.OPENED, "identify", "track"]),
            st.binary(max_size=20),
        ),
        max_size=1200,
    ),
    records=st.lists(
        st.tuples(st.sampled_from(["acme", "globex"]), st.text(max_size=5), st.binary()),
        max_size=300,
    ),
)
def test_inserts_in_parts_equal_one_insert_per_row(
    messages: list[EncodedMessage], records: list[tuple[str, str, bytes]]
) -> None:
    fast, plain = (sqlite3.connect(":memory:") for _ in range(2))
    for db in (fast, plain):
        db.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, tenant TEXT, message_id TEXT, "
            "kind TEXT, body BLOB, accepted_at REAL, owner TEXT)"
        )
    insert_messages(fast, messages, 12.5)
    insert_in_parts(fast, insert_records_sql, [(*r, 13.5) for r in records])
    plain.executemany(
        "INSERT INTO messages (tenant, message_id, kind, body, accepted_at) VALUES (?, ?, ?, ?, ?)",
        [(m.tenant, m.message_id, kind_of(m.kind), m.body, 12.5) for m in messages]
        + [(t, "", k, b, 13.5) for t, k, b in records],
    )
    query = "SELECT * FROM messages ORDER BY id"
    assert fast.execute(query).fetchall() == plain.execute(query).fetchall()
