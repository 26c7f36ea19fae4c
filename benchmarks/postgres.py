"""Benchmark the PostgreSQL spool (``Emitter(spool="postgresql://...")`` and ``relay``)
side by side with the SQLite spool file and segment-analytics-python 2.4, in one run.

Usage (from the repository root)::

    python -m benchmarks.postgres [--quick] [--json FILE] [--only LIST] [--backlog N]
                                  [--events N] [--relays 1,2,4]

It starts its own throw-away PostgreSQL (``LocalPostgres``: loopback, ``fsync=off``, so
the figures are those of the round trips and the server's CPU, not of a disk) and one
``LocalSegment`` (``python -m selligent_segment.testing``) in their own processes. Every
measurement runs in a fresh child process (``run.run_child``) or, for relays, in real
``selligent-segment relay`` processes; each PostgreSQL run uses a schema of its own.

Scenarios (``--quick`` shrinks every size):

1. ``per_call``: mean microseconds per ``emit(dict)``: PostgreSQL (one short transaction
   with its row before returning), the spool file (one journal ``write(2)``), the anchor's
   ``track()`` (an in-memory queue). The endpoint answers 503 with ``Retry-After: 30``,
   so only the call is measured.
2. ``threads``: 8 threads calling ``emit`` at once, events/s over all of them: what group
   commits would improve (several threads' rows in one transaction).
3. ``emit_many``: one ``emit_many`` of ``--events`` prebuilt dicts: events/s until it
   returns (PostgreSQL: committed, one COPY per chunk; the file: journaled). Target
   >= 50,000/s for PostgreSQL. The anchor: a ``track()`` loop.
4. ``e2e``: ``--events`` events already in the table (written by another process), then
   1, 2 and 4 relay processes deliver them: events/s until the last one arrived. For
   context, one process emitting and delivering the same events: the spool file and the
   anchor.
5. ``latency``: one relay delivers while another process emits one event at a time (at
   random gaps of 50-300 ms, delivering nothing itself): the time from ``emit`` returning
   to the event's arrival, median and 90th percentile, with the wake-up (``NOTIFY``, the
   default) and with ``notify=off`` (polling once a second only).
6. ``backlog``: ``--backlog`` events (default 1,000,000) written with the endpoint down;
   the database's and the schema's size; then 4 relays drain it: events/s and each
   relay's peak RSS (``VmHWM``).

Exit status: 0 when the run completed (numbers show what was missed), 2 when a server
could not be started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import run as base

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "PGBENCH_RESULT "
SCENARIOS = ("per_call", "threads", "emit_many", "e2e", "latency", "backlog")
OUTAGE = {"outage": 503, "retry_after": 30}
KEY = "bench-key"
CHUNK = 10_000


# -- child side -------------------------------------------------------------------------------


def _make(lib: str, cfg: dict[str, Any], **options: Any) -> Any:
    spool = cfg["pg_url"] if lib == "postgres" else cfg["file"]
    return base.make_ours(cfg["url"], write_key=KEY, spool=spool, **options)


def child_per_call(cfg: dict[str, Any]) -> dict[str, Any]:
    lib, n = cfg["lib"], cfg["n"]
    records = [base.record(i) for i in range(n + 200)]
    if lib == "anchor":
        integ = base.integration_value()
        client = base.make_anchor(cfg["url"], KEY, max_queue_size=n + 1000)
        items = [base.track_args(i, integ) for i in range(n + 200)]
        for a, p, c in items[:200]:
            client.track(anonymous_id=a, event=base.EVENT, properties=p, context=c)
        t0 = time.perf_counter()
        for a, p, c in items[200:]:
            client.track(anonymous_id=a, event=base.EVENT, properties=p, context=c)
        us = (time.perf_counter() - t0) / n * 1e6
        for consumer in client.consumers or ():
            consumer.pause()
        return {"us_per_call": round(us, 2)}
    emitter = _make(lib, cfg, max_pending=n + 1000)
    for r in records[:200]:
        emitter.emit(r)
    t0 = time.perf_counter()
    for r in records[200:]:
        emitter.emit(r)
    us = (time.perf_counter() - t0) / n * 1e6
    emitter.close(timeout=0.5)
    return {"us_per_call": round(us, 2)}


def child_threads(cfg: dict[str, Any]) -> dict[str, Any]:
    lib, n, nthreads = cfg["lib"], cfg["n"], cfg["threads"]
    emitter = _make(lib, cfg, max_pending=n + 1000)
    per = n // nthreads
    emitter.emit(base.record(0))
    barrier = threading.Barrier(nthreads + 1)

    def work(k: int) -> None:
        records = [base.record(1 + k * per + i) for i in range(per)]
        barrier.wait()
        for r in records:
            emitter.emit(r)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    emitter.close(timeout=0.5)
    return {"eps": round(per * nthreads / seconds, 1), "threads": nthreads}


def child_emit_many(cfg: dict[str, Any]) -> dict[str, Any]:
    lib, n = cfg["lib"], cfg["n"]
    records = [base.record(i) for i in range(n)]
    if lib == "anchor":
        integ = base.integration_value()
        client = base.make_anchor(cfg["url"], KEY, max_queue_size=n + 1000)
        items = [base.track_args(i, integ) for i in range(n)]
        t0 = time.perf_counter()
        for a, p, c in items:
            client.track(anonymous_id=a, event=base.EVENT, properties=p, context=c)
        seconds = time.perf_counter() - t0
        for consumer in client.consumers or ():
            consumer.pause()
        return {"eps": round(n / seconds, 1)}
    emitter = _make(lib, cfg, max_spool_bytes=4 << 30, on_full="block")
    emitter.emit_many(records[:100])  # warm up
    t0 = time.perf_counter()
    result = emitter.emit_many(records[100:])
    seconds = time.perf_counter() - t0
    emitter.close(timeout=0.5)
    return {"eps": round(result.accepted / seconds, 1), "accepted": result.accepted}


def child_fill(cfg: dict[str, Any]) -> dict[str, Any]:
    """``n`` events into the table, the endpoint down: the backlog relays then drain."""
    n = cfg["n"]
    emitter = _make("postgres", cfg, max_spool_bytes=16 << 30, on_full="block")
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        emitter.emit_many([base.record(i) for i in range(start, min(n, start + CHUNK))])
    seconds = time.perf_counter() - t0
    emitter.close(timeout=0.5)
    return {"eps": round(n / seconds, 1), "rss_mb": base.rss_mb()}


def child_single(cfg: dict[str, Any]) -> dict[str, Any]:
    """One process emits ``n`` events and delivers them (the spool file, or the anchor)."""
    lib, n, url = cfg["lib"], cfg["n"], cfg["url"]
    probe = base.Probe()
    t0 = time.perf_counter()
    if lib == "anchor":
        integ = base.integration_value()
        client = base.make_anchor(url, KEY, max_queue_size=n + 1000)
        for i in range(n):
            a, p, c = base.track_args(i, integ)
            client.track(anonymous_id=a, event=base.EVENT, properties=p, context=c)
        ok, t1, _ = base.wait_arrived(
            url, n, t0 + 600, probe, lambda: base.anchor_drained([client])
        )
    else:
        emitter = _make(lib, cfg, max_spool_bytes=4 << 30, on_full="block")
        for start in range(0, n, CHUNK):
            emitter.emit_many([base.record(i) for i in range(start, min(n, start + CHUNK))])
        ok, t1, _ = base.wait_arrived(url, n, t0 + 600, probe)
        emitter.close(timeout=2)
    return {"eps": round(n / (t1 - t0), 1), "all_arrived": ok, "rss_mb": base.rss_mb()}


def child_latency(cfg: dict[str, Any]) -> dict[str, Any]:
    """Emit ``n`` events one at a time, delivering none (a relay does): ms to arrival."""
    import random

    n, url = cfg["n"], cfg["url"]
    emitter = _make("postgres", cfg)
    emitter._dispatcher.stop(1.0)  # an emitting host that leaves delivery to the relays
    rng = random.Random(7)
    latencies = []
    emitter.emit(base.record(0))  # the relay is up and has polled once
    base.wait_arrived(url, 1, time.perf_counter() + 60, base.Probe())
    time.sleep(2.0)  # its listener connected (at its first upkeep round)
    for i in range(1, n + 1):
        time.sleep(rng.uniform(0.05, 0.3))
        emitter.emit(base.record(i))
        t0 = time.perf_counter()
        while base.server_stats(url).get("unique_message_ids", 0) < i + 1:
            if time.perf_counter() - t0 > 10:
                break
            time.sleep(0.002)
        latencies.append((time.perf_counter() - t0) * 1000)
    emitter.close(timeout=0.5)
    latencies.sort()
    return {
        "median_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1], 1),
        "n": n,
    }


CHILDREN = {
    "latency": child_latency,
    "per_call": child_per_call,
    "threads": child_threads,
    "emit_many": child_emit_many,
    "fill": child_fill,
    "single": child_single,
}


def child_main(raw: str) -> None:
    cfg = json.loads(raw)
    result = CHILDREN[cfg["scenario"]](cfg)
    sys.stdout.write(PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the anchor's exit hook would join its paused consumers


# -- parent side ------------------------------------------------------------------------------


class Relays:
    """``count`` ``selligent-segment relay`` processes on ``pg_url``."""

    def __init__(self, count: int, pg_url: str, endpoint: str) -> None:
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "selligent_segment",
                    "relay",
                    "--spool",
                    pg_url,
                    "--write-key",
                    KEY,
                    "--endpoint",
                    endpoint,
                    "--interval",
                    "3600",
                ],
                cwd=ROOT,
                env=base.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]

    def peak_rss_mb(self) -> list[float]:
        peaks = []
        for proc in self.procs:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(round(int(line.split()[1]) / 1024, 1))
        return peaks

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def drain(pg_url: str, server: base.Server, n: int, relays: int) -> dict[str, Any]:
    """Start ``relays`` relay processes on a table holding ``n`` events; time to deliver."""
    server.reset()
    probe = base.Probe()
    group = Relays(relays, pg_url, server.url)
    t0 = time.perf_counter()
    try:
        ok, t1, stats = base.wait_arrived(server.url, n, t0 + 1800, probe)
        rss = group.peak_rss_mb()
    finally:
        group.stop()
    return {
        "eps": round(n / (t1 - t0), 1),
        "all_arrived": ok,
        "arrived": stats.get("unique_message_ids"),
        "relay_rss_mb": rss,
    }


def db_sizes(url: str, schema: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        db = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        tables = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return {
        "database_bytes": int(db[0]) if db else 0,
        "schema_bytes": int(tables[0]) if tables else 0,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, pg_url: str, server: base.Server) -> None:
        self.args = args
        self.pg = pg_url
        self.server = server
        self.tmp = Path(tempfile.mkdtemp(prefix="pgbench-"))
        self.count = 0
        self.rows: list[tuple[str, str, str, str]] = []
        self.raw: dict[str, Any] = {}

    def schema(self) -> tuple[str, str]:
        self.count += 1
        name = f"bench_{os.getpid()}_{self.count}"
        return name, f"{self.pg}?spool_schema={name}"

    def child(self, scenario: str, lib: str, n: int, **extra: Any) -> dict[str, Any]:
        schema, url = self.schema()
        url = extra.pop("pg_url_override", url)
        cfg = {
            "scenario": scenario,
            "lib": lib,
            "n": n,
            "url": self.server.url,
            "pg_url": url,
            "file": str(self.tmp / f"{schema}.db"),
            **extra,
        }
        result = base.run_child(cfg, 3600, module="benchmarks.postgres", prefix=PREFIX)
        result["schema"] = schema
        result["pg_url"] = url
        self.raw.setdefault(scenario, {}).setdefault(lib, []).append(result)
        return result

    def add(self, label: str, pg: str, file: str, anchor: str) -> None:
        self.rows.append((label, pg, file, anchor))
        print(f"| {label} | {pg} | {file} | {anchor} |", flush=True)


def _fmt(result: dict[str, Any], key: str, unit: str) -> str:
    if key not in result:
        return f"error: {result.get('error', '?')}"
    value = result[key]
    return f"{value:,.1f} {unit}" if unit == "µs" else f"{value:,.0f} {unit}"


def parent_main(args: argparse.Namespace) -> int:
    from selligent_segment.testing._local_postgres import LocalPostgres, PostgresUnavailable

    quick = args.quick
    events = args.events or (20_000 if quick else 100_000)
    backlog = args.backlog if args.backlog is not None else (50_000 if quick else 1_000_000)
    relays = [int(r) for r in args.relays.split(",")]
    wanted = base.wanted_scenarios(args, SCENARIOS)
    if wanted is None:
        return 2
    server = base.Server()
    try:
        pg = LocalPostgres().start()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL could not start: {exc}")
        return 2
    try:
        server.start()
        bench = Bench(args, pg.url, server)
        print(json.dumps(base.machine()))
        print("| measurement | PostgreSQL | SQLite spool file | segment-analytics-python |")
        print("|---|---|---|---|")
        if "per_call" in wanted:
            n = 2_000 if quick else 10_000
            cells = []
            for lib in ("postgres", "sqlite", "anchor"):
                server.reset(OUTAGE)
                cells.append(_fmt(bench.child("per_call", lib, n), "us_per_call", "µs"))
            bench.add(f"`emit` per call, {n:,} calls, mean", *cells)
        if "threads" in wanted:
            n = 4_000 if quick else 16_000
            cells = []
            for lib in ("postgres", "sqlite"):
                server.reset(OUTAGE)
                cells.append(_fmt(bench.child("threads", lib, n, threads=8), "eps", "/s"))
            bench.add(f"`emit` from 8 threads at once, {n:,} events", *cells, "-")
        if "emit_many" in wanted:
            cells = []
            for lib in ("postgres", "sqlite", "anchor"):
                server.reset(OUTAGE)
                cells.append(_fmt(bench.child("emit_many", lib, events), "eps", "events/s"))
            bench.add(f"`emit_many` of {events:,} (target >= 50,000/s)", *cells)
        if "e2e" in wanted:
            singles = []
            for lib in ("sqlite", "anchor"):
                server.reset()
                singles.append(_fmt(bench.child("single", lib, events), "eps", "events/s"))
            for count in relays:
                server.reset(OUTAGE)
                filled = bench.child("fill", "postgres", events)
                result = drain(filled["pg_url"], server, events, count)
                bench.raw.setdefault("e2e", {}).setdefault(f"relays_{count}", []).append(result)
                label = f"end to end, {events:,} events, {count} relay process(es)"
                if count == relays[0]:
                    bench.add(label, _fmt(result, "eps", "events/s"), *singles)
                else:
                    bench.add(label, _fmt(result, "eps", "events/s"), "-", "-")
        if "latency" in wanted:
            n = 20 if quick else 60
            for notify in ("on", "off"):
                server.reset()
                url = bench.schema()[1] + f"&notify={notify}"
                group = Relays(1, url, server.url)
                try:
                    result = bench.child("latency", "postgres", n, pg_url_override=url)
                finally:
                    group.stop()
                what = "NOTIFY wake-up" if notify == "on" else "polling only (notify=off)"
                bench.add(
                    f"latency emit -> arrival, 1 relay, {n} events one at a time, {what}",
                    f"median {result.get('median_ms', '?')} ms, p90 {result.get('p90_ms', '?')} ms",
                    "-",
                    "-",
                )
        if "backlog" in wanted and backlog:
            server.reset(OUTAGE)
            filled = bench.child("fill", "postgres", backlog)
            sizes = db_sizes(pg.url, filled["schema"])
            count = max(relays)
            result = drain(filled["pg_url"], server, backlog, count)
            result.update(sizes)
            result["fill_eps"] = filled.get("eps")
            bench.raw["backlog"] = result
            bench.add(
                f"backlog of {backlog:,} written (endpoint down)",
                f"{_fmt(filled, 'eps', 'events/s')}; table "
                f"{sizes['schema_bytes'] / 2**20:,.0f} MiB, database "
                f"{sizes['database_bytes'] / 2**20:,.0f} MiB",
                "-",
                "-",
            )
            rss = result.get("relay_rss_mb") or [0.0]
            bench.add(
                f"backlog of {backlog:,} drained by {count} relays",
                f"{_fmt(result, 'eps', 'events/s')}; relay peak RSS "
                f"{statistics.median(rss):,.0f} MiB (max {max(rss):,.0f})",
                "-",
                "-",
            )
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": bench.rows, "raw": bench.raw}, indent=2))
    finally:
        server.close()
        pg.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="FILE", help="write the raw results to FILE")
    parser.add_argument("--only", metavar="LIST", help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--events", type=int, help="events for emit_many and e2e (100,000)")
    parser.add_argument("--backlog", type=int, help="events of the backlog (1,000,000; 0: skip)")
    parser.add_argument("--relays", default="1,2,4", help="relay counts for e2e (1,2,4)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
