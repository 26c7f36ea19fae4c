"""What reading the PostgreSQL spool's counts costs, with the queue at a given size.

Usage (from the repository root)::

    python -m benchmarks.postgres_stats [--rows 200000,1000000] [--calls 20] [--json FILE]

For each size it starts from an empty schema of its own in one throw-away ``LocalPostgres``
(loopback, ``fsync=off``), writes that many rows (four tenants, bodies of 300 to 800 bytes,
``INSERT ... SELECT FROM generate_series`` in statements of 50,000 rows, so the counting
triggers run as for any writer) and leases 500 of them, then times, in milliseconds (the
median of ``--calls`` calls, each a round trip from this process):

- ``stats()``: :meth:`PostgresSpool.stats` (``queue_totals()``: the counts table and the
  index of leased rows);
- ``stats() before``: the statement ``stats()`` ran before schema version 2 (one
  ``GROUP BY`` over the queue), on the same rows;
- ``status``: :meth:`PostgresView.status` (``spool status``), and ``status before``: the
  same with its version 1 statement (the view reading the schema as version 1);
- ``compaction``: one :func:`compact_counts` folding the deltas the writes left;
- ``migration``: the version 1 -> 2 step on the same rows (the triggers dropped, the
  version set back to 1, then ``ensure_schema``): one scan, once.

The "before" figures run the old statements against the same table in the same run, so
the comparison does not depend on the machine's load at another time.

``--write-cost N`` measures instead what the counting triggers cost the writers: N rounds,
each writing into two fresh schemas one after the other, one with the triggers and one
without (dropped), the same rows as the spool writes them (binary ``COPY`` in
transactions of 512 rows; single-row prepared ``INSERT`` in autocommit, as one ``emit``),
then one ``DELETE`` of a quarter of them. It reports the server backend's CPU time per
row (user + system from ``/proc/PID/stat`` of the connection's backend, which runs on
this machine: less sensitive to the other work on the machine than wall-clock time) and
the wall-clock time per row, for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

CHUNK = 50_000


def _median_ms(call: Callable[[], object], calls: int) -> float:
    call()  # warm: connections, plans
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def measure(url: str, rows: int, calls: int) -> dict[str, Any]:
    import psycopg

    from selligent_segment.spool._postgres import (
        PostgresSpool,
        compact_counts,
        ensure_schema,
    )
    from selligent_segment.spool._postgres_view import PostgresView

    schema = f"stats_bench_{rows}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    spool = PostgresSpool(url, schema=schema, notify=False)
    result: dict[str, Any] = {"rows": rows}
    try:
        start = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            for first in range(0, rows, CHUNK):
                conn.execute(
                    f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
                    "SELECT 't' || (i %% 4), 'm-' || i, 'opened', "
                    "convert_to(repeat('x', (300 + i %% 500)::int), 'UTF8') "
                    "FROM generate_series(%s::bigint, %s::bigint) AS i",
                    (first, min(rows, first + CHUNK) - 1),
                )
            conn.execute(f"VACUUM ANALYZE {schema}.messages")
        result["fill_s"] = round(time.perf_counter() - start, 1)
        lease = spool.lease("t1", 500, 1 << 30)
        old_stats = (
            f"SELECT tenant, count(*), coalesce(sum(length(body)), 0), "
            f"count(*) FILTER (WHERE owner IS NOT NULL AND lease_until >= now()) "
            f"FROM {schema}.messages GROUP BY tenant"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            result["compaction_rows"] = compact_counts(conn, schema)
            result["compaction_ms"] = round((time.perf_counter() - start) * 1000, 2)
            stats = spool.stats()
            assert stats.messages == rows, stats
            assert stats.leased == (500 if lease else 0), stats
            result["stats_ms"] = _median_ms(spool.stats, calls)
            result["stats_before_ms"] = _median_ms(
                lambda: conn.execute(old_stats).fetchall(), max(3, calls // 4)
            )
        view_url = f"{url}?spool_schema={schema}"
        with PostgresView(view_url) as view:
            new = view.status()
            result["status_ms"] = _median_ms(view.status, calls)
            view.version = 1  # the version 1 statement, on the same rows
            old = view.status()
            result["status_before_ms"] = _median_ms(view.status, max(3, calls // 4))
        assert [(t.queued, t.leased) for t in new.tenants] == [
            (t.queued, t.leased) for t in old.tenants
        ]
        if lease is not None:
            spool.release(lease, lease.messages)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER count_added ON {schema}.messages")
            conn.execute(f"DROP TRIGGER count_removed ON {schema}.messages")
            conn.execute(f"UPDATE {schema}.meta SET version = 1")
            start = time.perf_counter()
            ensure_schema(conn, schema)
            result["migration_ms"] = round((time.perf_counter() - start) * 1000, 1)
        assert spool.stats().messages == rows
    finally:
        spool.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return result


_BODY = b'{"type":"track","event":"Email Opened","messageId":"0123456789abcdef",' + (
    b'"userId":"u1234567","timestamp":"2026-01-01T00:00:00Z","properties":{}}'
)


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the server process ``pid`` has used."""
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_cost(url: str, schema: str, triggers: bool, rows: int, single: int) -> dict[str, float]:
    import psycopg

    from selligent_segment.spool._postgres import ensure_schema

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        ensure_schema(conn, schema)
        if not triggers:
            conn.execute(f"DROP TRIGGER count_added ON {schema}.messages")
            conn.execute(f"DROP TRIGGER count_removed ON {schema}.messages")
        pid = conn.info.backend_pid
        data = [(f"t{i % 4}", f"m-{i}", "opened", _BODY) for i in range(rows)]
        copy_sql = (
            f"COPY {schema}.messages (tenant, message_id, kind, body) FROM STDIN (FORMAT BINARY)"
        )
        result: dict[str, float] = {}
        cpu, wall = _backend_cpu(pid), time.perf_counter()
        for first in range(0, rows, 512):
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
                copy.set_types(("text", "text", "text", "bytea"))
                for row in data[first : first + 512]:
                    copy.write_row(row)
        result["copy_cpu_us"] = (_backend_cpu(pid) - cpu) / rows * 1e6
        result["copy_wall_us"] = (time.perf_counter() - wall) / rows * 1e6
        insert = f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
        insert += "VALUES (%s, %s, %s, %b)"
        cpu, wall = _backend_cpu(pid), time.perf_counter()
        for row in data[:single]:
            conn.execute(insert, row, prepare=True)
        result["insert_cpu_us"] = (_backend_cpu(pid) - cpu) / single * 1e6
        result["insert_wall_us"] = (time.perf_counter() - wall) / single * 1e6
        cpu = _backend_cpu(pid)
        deleted = conn.execute(f"DELETE FROM {schema}.messages WHERE tenant = 't1'").rowcount
        result["delete_cpu_us"] = (_backend_cpu(pid) - cpu) / max(1, deleted) * 1e6
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return {k: round(v, 1) for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres_stats")
    parser.add_argument("--rows", default="200000,1000000", help="queue sizes, comma-separated")
    parser.add_argument("--calls", type=int, default=20, help="calls timed per figure")
    parser.add_argument("--json", help="write the results to this file too")
    parser.add_argument(
        "--write-cost", type=int, metavar="N", help="measure the triggers' cost, N rounds"
    )
    args = parser.parse_args(argv)
    from selligent_segment.testing._local_postgres import LocalPostgres, PostgresUnavailable

    try:
        pg = LocalPostgres().start()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL could not start: {exc}")
        return 2
    results: list[dict[str, Any]] = []
    try:
        if args.write_cost:
            print("| round | triggers | COPY cpu | COPY wall | INSERT cpu | INSERT wall |", end="")
            print(" DELETE cpu |")
            print("|---|---|---|---|---|---|---|")
            for n in range(args.write_cost):
                for triggers in (False, True):
                    r = write_cost(pg.url, "write_cost", triggers, 50_000, 10_000)
                    results.append({"round": n, "triggers": triggers, **r})
                    print(
                        f"| {n + 1} | {'yes' if triggers else 'no'} | {r['copy_cpu_us']} µs | "
                        f"{r['copy_wall_us']} µs | {r['insert_cpu_us']} µs | "
                        f"{r['insert_wall_us']} µs | {r['delete_cpu_us']} µs |",
                        flush=True,
                    )
        else:
            print(
                "| rows | stats() | stats() before | status | status before | compaction "
                "| migration |"
            )
            print("|---|---|---|---|---|---|---|")
            for rows in (int(r) for r in args.rows.split(",")):
                r = measure(pg.url, rows, args.calls)
                results.append(r)
                print(
                    f"| {rows:,} | {r['stats_ms']} ms | {r['stats_before_ms']} ms | "
                    f"{r['status_ms']} ms | {r['status_before_ms']} ms | "
                    f"{r['compaction_ms']} ms ({r['compaction_rows']} rows) | "
                    f"{r['migration_ms']} ms |",
                    flush=True,
                )
    finally:
        pg.stop()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
