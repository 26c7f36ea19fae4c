"""Large ``put_rows`` (``emit_many``'s chunks): one autocommit ``COPY`` into the partition of
the generation last read, falling back to the column's default when a rotation dropped that
partition meanwhile (spool/_postgres.py, ``_copy_now``). Real server."""

from __future__ import annotations

import itertools

import psycopg

from selligent_segment.spool._postgres import GROUP_MAX, PostgresSpool
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)


def _rows(n: int, start: int = 0) -> list[tuple[str, str, str, bytes]]:
    return [("acme", f"m{i}", "delivered", b'{"i":%d}' % i) for i in range(start, start + n)]


def _generations(postgres: LocalPostgres, schema: str) -> list[tuple[int, int]]:
    with psycopg.connect(postgres.url) as conn:
        sql = f"SELECT generation, count(*) FROM {schema}.messages GROUP BY 1 ORDER BY 1"
        return [(int(g), int(n)) for g, n in conn.execute(sql)]


def test_a_large_put_goes_into_the_generation_last_read_and_keeps_its_order(
    postgres: LocalPostgres,
) -> None:
    spool = PostgresSpool(f"{postgres.url}?spool_schema=copy_test_{next(_schemas)}")
    try:
        assert spool._generation == 1  # read with the first tenants()
        spool.rotate(force=True)  # generation 2; 1 is drained and dropped
        assert spool._generation == 2
        spool.put_rows(_rows(GROUP_MAX + 1))
        assert _generations(postgres, spool.schema) == [(2, GROUP_MAX + 1)]
        lease = spool.lease("acme", 1000, 1 << 20)
        assert lease is not None
        assert [m.message_id for m in lease.messages] == [f"m{i}" for i in range(GROUP_MAX + 1)]
    finally:
        spool.close()


def test_a_generation_whose_partition_was_dropped_costs_nothing_the_rows_go_in_whole(
    postgres: LocalPostgres,
) -> None:
    spool = PostgresSpool(f"{postgres.url}?spool_schema=copy_test_{next(_schemas)}")
    other = PostgresSpool(f"{postgres.url}?spool_schema={spool.schema}")
    try:
        other.rotate(force=True)  # another process rotates: 1 dropped, 2 current
        assert spool._generation == 1  # this one has not read it yet
        spool.put_rows(_rows(100))
        assert spool._generation is None  # read again at the next tenants()
        assert _generations(postgres, spool.schema) == [(2, 100)]  # none lost, none twice
        spool.tenants()
        assert spool._generation == 2
    finally:
        other.close()
        spool.close()


def test_a_partition_is_not_dropped_while_a_copy_holds_the_queue(postgres: LocalPostgres) -> None:
    """What makes the generation read before a COPY safe: once the COPY holds the queue
    (ROW EXCLUSIVE on the parent, taken when it begins), dropping a drained partition
    waits for it (the rotation gives up after 50 ms and tries at its next round)."""
    spool = PostgresSpool(f"{postgres.url}?spool_schema=copy_test_{next(_schemas)}")
    try:
        with psycopg.connect(postgres.url) as copying:
            copying.execute(f"LOCK TABLE {spool.schema}.messages IN ROW EXCLUSIVE MODE")
            assert spool.rotate(force=True) == 0  # messages_1 is empty, but held
            copying.rollback()
        assert spool.rotate() == 1
    finally:
        spool.close()
