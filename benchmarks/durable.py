"""Benchmark the durable spool (``Emitter(spool=PATH)``) against segment-analytics-python 2.4.

Usage (from the repository root)::

    python -m benchmarks.durable [--quick] [--json FILE] [--only per_call,emit_many,backlog,e2e]
                                 [--check] [--tmpdir DIR]

Conventions are those of ``benchmarks/run.py`` (whose helpers this module imports): one
``LocalSegment`` server (``python -m selligent_segment.testing --port 0``) in its own process,
shared by every measurement and reset (``POST /_faults`` + ``POST /_reset``) before each; every
(scenario, library) pair runs in a fresh child process that reports one JSON line; the parent
prints a markdown table. Both libraries get the same logical events (``run.record`` and
``run.track_args``). Spool files live in one temporary directory (``--tmpdir``, default the
system's) removed at the end.

Scenarios (sizes of the full run; ``--quick`` shrinks them):

1. ``per_call``: mean microseconds per durable ``emit(dict)`` (``Emitter(spool=<file>)``;
   each call journals its event with one ``write(2)`` before returning) over 20,000 calls
   after 1,000 warm-up calls, then p50/p99 over 20,000 more timed one by one; against
   ``Client.track(...)`` (in-memory queue) and, for context, the in-memory ``emit(dict)``.
   The server is up, so both libraries deliver while the calls are timed. Three repetitions,
   each with a fresh client (and spool file); the medians are shown. The JSON also has the
   CPU time per timed call, of the calling thread and of the process (less load-sensitive).
2. ``emit_many``: one ``emit_many`` of 100,000 prebuilt dicts into a fresh spool with default
   settings; events/s from the call until it returns (all journaled), and until every event
   is in the SQLite file (the emitter's private intake has no work and its encoder is idle;
   the row count is then checked through a separate read-only connection). Three
   repetitions, the median is shown. Against a loop of ``track()`` over the same events.
   The server answers 503 with ``Retry-After: 30`` after one warm-up request, so no delivery
   interferes.
3. ``backlog``: 1,000,000 events with the endpoint down (503, Retry-After 30); peak RSS read
   from ``VmHWM`` in ``/proc/self/status`` of the child. Ours: ``emit_many`` in chunks of
   10,000 records built just in time, ``on_full="block"`` (so a producer faster than the
   encoder waits instead of getting SpoolFull) and ``max_spool_bytes`` 2 GiB (the 256 MiB
   default holds about 870,000 of these events); once as fast as the spool accepts, once
   paced (after each chunk the producer waits for the inbox to empty). The anchor: default
   settings (``max_queue_size`` 10,000: the rest is dropped and counted), and with
   ``max_queue_size`` 1,000,000 (holds everything: memory per queued event).
4. ``e2e``: ``benchmarks.run``'s end to end for one tenant (50,000 events emitted one by
   one, then until every one arrived at the server), ours with a spool file (each event
   journaled before ``emit`` returns, moved into the SQLite file, leased, sent and
   acknowledged there), against the official client (its queue in memory) as there.

Exit status: 0 when the run completed (missed targets show in the table), 2 when the server
could not be started; with ``--check`` also 1 when a target is missed or a measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/durable.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run as base  # read-only use of run.py's helpers

ROOT = base.ROOT
RESULT_PREFIX = "DURABLE_RESULT "

FULL = {
    "per_call": 20_000,
    "warmup": 1_000,
    "emit_many": 100_000,
    "reps": 3,
    "backlog": 1_000_000,
    "chunk": 10_000,
    "e2e": 50_000,
}
QUICK = {
    "per_call": 2_000,
    "warmup": 200,
    "emit_many": 20_000,
    "reps": 1,
    "backlog": 50_000,
    "chunk": 5_000,
    "e2e": 5_000,
}
OUTAGE = {"outage": 503, "retry_after": 30}
FAULTS: dict[str, dict[str, Any] | None] = {
    "per_call": None,
    "emit_many": OUTAGE,
    "backlog": OUTAGE,
    "e2e": None,
}
SCENARIOS = ("per_call", "emit_many", "backlog", "e2e")
LIBS = {
    "per_call": ("durable", "memory", "anchor"),
    "emit_many": ("durable", "anchor"),
    "backlog": ("durable_burst", "durable_paced", "anchor", "anchor_all"),
    "e2e": ("durable", "durable_uncapped", "anchor"),
}
CAP = {"per_call": 150.0, "emit_many": 200.0, "backlog": 420.0, "e2e": 150.0}
BACKLOG_SPOOL_BYTES = 2 * 1024**3
MB = 1024 * 1024

TARGET_EMIT_MANY = 100_000  # events/s
TARGET_RSS_MB = 80.0
TARGET_E2E = 5.0  # issue 16: durable end to end >= 5x the official client (in memory)


# -- child side -------------------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of this process, in MB, from /proc/self/status."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def spool_file(cfg: dict[str, Any], tag: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"durable-{tag}-", dir=cfg["tmpdir"]))
    return directory / "spool.db"


def spool_rows(path: Path) -> int:
    """Messages in the spool file, counted through a connection of its own."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        db.close()


def spool_size_mb(path: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += path.with_name(path.name + suffix).stat().st_size
    return round(total / MB, 1)


def ingested(emitter: Any) -> bool:
    """True when every accepted record is in the SQLite file: the inbox is empty and the
    encoder has gone idle (it sets the flag only after its last group commit)."""
    return not emitter._intake.pending() and emitter._encoder.idle


def wait_ingested(emitter: Any, deadline: float, poll: float = 0.002) -> bool:
    while not ingested(emitter):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def make_durable(url: str, path: Path, **options: Any) -> Any:
    emitter = base.make_ours(url, write_key="bench-key", spool=str(path), **options)
    if not emitter._intake.durable:  # pragma: no cover - a guard against measuring the wrong thing
        raise RuntimeError("the emitter did not open a durable spool")
    return emitter


def timed_pass(call: Callable[[Any], Any], items: list[Any], warm: int, n: int) -> dict[str, Any]:
    """Warm up, time n calls as a whole (mean), then n more one by one (p50, p99)."""
    for item in items[:warm]:
        call(item)
    timed = items[warm : warm + n]
    cpu0, thread0 = time.process_time(), time.thread_time()
    t0 = time.perf_counter()
    for item in timed:
        call(item)
    elapsed = time.perf_counter() - t0
    cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
    clock = time.perf_counter
    durations: list[float] = []
    for item in items[warm + n :]:
        t = clock()
        call(item)
        durations.append(clock() - t)
    durations.sort()
    return {
        "us_per_call": round(elapsed / n * 1e6, 3),
        "us_p50": round(durations[len(durations) // 2] * 1e6, 3),
        "us_p99": round(durations[len(durations) * 99 // 100] * 1e6, 3),
        "calls_s": round(elapsed, 4),
        # CPU time during the timed calls: of the calling thread alone, and of the whole
        # process (its background threads included); less sensitive to other load.
        "us_cpu_caller": round(thread / n * 1e6, 3),
        "us_cpu_process": round(cpu / n * 1e6, 3),
    }


def anchor_caller(client: Any) -> Callable[[tuple[str, dict[str, Any], dict[str, Any]]], Any]:
    """``track`` called with one prebuilt ``run.track_args`` tuple."""
    track, event = client.track, base.EVENT

    def call(args: tuple[str, dict[str, Any], dict[str, Any]]) -> Any:
        return track(anonymous_id=args[0], event=event, properties=args[1], context=args[2])

    return call


def child_per_call(cfg: dict[str, Any]) -> dict[str, Any]:
    """``reps`` repetitions, each with a fresh client (and spool file); medians reported."""
    url, lib, n, warm, reps = cfg["url"], cfg["lib"], cfg["n"], cfg["warmup"], cfg["reps"]
    total = warm + 2 * n
    out: dict[str, Any] = {"n": n, "base": proc_status(), "reps": []}
    for rep in range(reps):
        first = rep * total
        r: dict[str, Any] = {}
        if lib == "anchor":
            integ = base.integration_value()
            client = base.make_anchor(url, "bench-key", max_queue_size=total + 1000)
            items = [base.track_args(first + i, integ) for i in range(total)]
            r.update(timed_pass(anchor_caller(client), items, warm, n))
            r["delivered_in_time"] = base.anchor_wait([client], 60.0)
            for consumer in client.consumers or ():
                consumer.pause()
        else:
            if lib == "durable":
                path = spool_file(cfg, "per-call")
                emitter = make_durable(url, path, max_pending=total + 1000)
            else:
                emitter = base.make_ours(url, write_key="bench-key", max_pending=total + 1000)
            r.update(
                timed_pass(emitter.emit, [base.record(first + i) for i in range(total)], warm, n)
            )
            r["inbox_after_calls"] = emitter._intake.pending()
            r["delivered_in_time"] = bool(emitter.flush(timeout=60.0))
            r["lib_stats"] = base.ours_stats(emitter)
            r.update(base.ours_close(emitter))
        out["reps"].append(r)
    for key in ("us_per_call", "us_p50", "us_p99", "us_cpu_caller", "us_cpu_process"):
        values = [r[key] for r in out["reps"]]
        out[key] = round(statistics.median(values), 3)
        out[key + "_all"] = values
    out["delivered_in_time"] = all(r["delivered_in_time"] for r in out["reps"])
    out["close_ok"] = all(r.get("close_ok", True) for r in out["reps"])
    stats = base.server_stats(url)
    out["server"] = stats
    out["arrived"] = stats["unique_message_ids"]
    out["expected"] = reps * total
    out["peak"] = proc_status()
    return out


def child_emit_many(cfg: dict[str, Any]) -> dict[str, Any]:
    url, lib, n, reps, warm = cfg["url"], cfg["lib"], cfg["n"], cfg["reps"], cfg["warmup"]
    out: dict[str, Any] = {"n": n, "reps": []}
    for rep in range(reps):
        first = rep * (n + warm)
        if lib == "anchor":
            out["reps"].append(anchor_loop_rate(url, first, n, warm))
        else:
            out["reps"].append(durable_bulk_rate(cfg, first, n, warm))
    for key in ("journaled_eps", "ingested_eps", "loop_eps"):
        values = [r[key] for r in out["reps"] if key in r]
        if values:
            out[key] = round(statistics.median(values), 1)
            out[key + "_all"] = values
    out["peak"] = proc_status()
    return out


def durable_bulk_rate(cfg: dict[str, Any], first: int, n: int, warm: int) -> dict[str, Any]:
    """One emit_many of n prebuilt dicts into a fresh spool; journaled and ingested rates."""
    url = cfg["url"]
    path = spool_file(cfg, "emit-many")
    emitter = make_durable(url, path)
    out: dict[str, Any] = {}
    try:
        # Warm up: code paths, the first lease and the first 503 (the tenant then backs
        # off for 30 s, so no sender touches the file while the bulk call is measured).
        emitter.emit_many([base.record(first + i) for i in range(warm)])
        deadline = time.monotonic() + 10.0
        while base.server_stats(url).get("requests", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        wait_ingested(emitter, time.monotonic() + 30.0)
        time.sleep(0.2)
        items = [base.record(first + warm + i) for i in range(n)]
        cpu0, thread0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        result = emitter.emit_many(items)
        t1 = time.perf_counter()
        out["caller_cpu_s"] = round(time.thread_time() - thread0, 4)
        out["process_cpu_s_call"] = round(time.process_time() - cpu0, 4)
        out["inbox_at_return"] = emitter._intake.pending()
        out["all_ingested"] = wait_ingested(emitter, time.monotonic() + 120.0)
        t2 = time.perf_counter()
        out["process_cpu_s_ingest"] = round(time.process_time() - cpu0, 4)
        out["accepted"] = result.accepted
        out["refused"] = len(result.refused)
        out["call_s"] = round(t1 - t0, 4)
        out["ingest_s"] = round(t2 - t0, 4)
        out["journaled_eps"] = round(result.accepted / (t1 - t0), 1)
        out["ingested_eps"] = round(result.accepted / (t2 - t0), 1)
        out["rows"] = spool_rows(path)
        out["rows_expected"] = warm + n
        out["spool_mb"] = spool_size_mb(path)
    finally:
        # An outage: everything stays in the file, which close() reports with a warning
        # (expected here, so kept out of stderr, where anything else is a problem).
        lib_log = logging.getLogger("selligent_segment")
        level = lib_log.level
        lib_log.setLevel(logging.ERROR)
        try:
            emitter.close(timeout=0)
        finally:
            lib_log.setLevel(level)
        shutil.rmtree(path.parent, ignore_errors=True)
    return out


def anchor_loop_rate(url: str, first: int, n: int, warm: int) -> dict[str, Any]:
    """A loop of n track() calls (prebuilt arguments), events/s; the same outage."""
    integ = base.integration_value()
    client = base.make_anchor(url, "bench-key", max_queue_size=n + warm + 1000)
    track = client.track
    event = base.EVENT
    for i in range(warm):
        anon, props, ctx = base.track_args(first + i, integ)
        track(anonymous_id=anon, event=event, properties=props, context=ctx)
    time.sleep(0.2)
    args = [base.track_args(first + warm + i, integ) for i in range(n)]
    refused = 0
    cpu0, thread0 = time.process_time(), time.thread_time()
    t0 = time.perf_counter()
    for anon, props, ctx in args:
        if not track(anonymous_id=anon, event=event, properties=props, context=ctx)[0]:
            refused += 1
    elapsed = time.perf_counter() - t0
    caller_cpu, process_cpu = time.thread_time() - thread0, time.process_time() - cpu0
    for consumer in client.consumers or ():
        consumer.pause()
    return {
        "refused": refused,
        "call_s": round(elapsed, 4),
        "loop_eps": round(n / elapsed, 1),
        "caller_cpu_s": round(caller_cpu, 4),
        "process_cpu_s_call": round(process_cpu, 4),
    }


def records(start: int, stop: int) -> Iterator[dict[str, Any]]:
    return (base.record(i) for i in range(start, stop))


def child_backlog(cfg: dict[str, Any]) -> dict[str, Any]:
    url, lib, n, chunk = cfg["url"], cfg["lib"], cfg["n"], cfg["chunk"]
    # Import the library first: its base memory is not part of what the backlog costs.
    if lib.startswith("anchor"):
        import segment.analytics  # noqa: F401
    else:
        import selligent_segment._emitter  # noqa: F401
    out: dict[str, Any] = {"n": n, "base": proc_status()}
    if lib.startswith("anchor"):
        options = {"max_queue_size": n + 1000} if lib == "anchor_all" else {}
        client = base.make_anchor(url, "bench-key", **options)
        integ = base.integration_value()
        track, event = client.track, base.EVENT
        dropped = 0
        t0 = time.perf_counter()
        for i in range(n):
            anon, props, ctx = base.track_args(i, integ)
            if not track(anonymous_id=anon, event=event, properties=props, context=ctx)[0]:
                dropped += 1
        out["calls_s"] = round(time.perf_counter() - t0, 2)
        time.sleep(1.0)  # the consumer has taken (and serialised) its first batch
        out["dropped"] = dropped
        out["held"] = client.queue.qsize()
        out["peak"] = proc_status()
        out["server"] = base.server_stats(url)
        return out
    path = spool_file(cfg, "backlog")
    emitter = make_durable(
        url, path, max_spool_bytes=BACKLOG_SPOOL_BYTES, on_full="block", block_timeout=600.0
    )
    paced = lib == "durable_paced"
    inbox_peak = 0
    samples: list[tuple[int, float]] = []
    refused = 0
    try:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            result = emitter.emit_many(records(start, min(n, start + chunk)))
            refused += len(result.refused)
            inbox_peak = max(inbox_peak, emitter._intake.pending())
            if paced:
                while emitter._intake.pending():
                    time.sleep(0.001)
            if not (start // chunk) % 10:
                samples.append((start + chunk, proc_status()["VmRSS"]))
        t_calls = time.perf_counter()
        out["all_ingested"] = wait_ingested(emitter, time.monotonic() + 300.0, poll=0.01)
        t_done = time.perf_counter()
        time.sleep(0.5)
        out["peak"] = proc_status()  # read before anything else allocates
        out["rss_samples"] = samples  # (events handed over, VmRSS MB) every 10 chunks
        out["inbox_peak"] = inbox_peak
        out["refused"] = refused
        out["calls_s"] = round(t_calls - t0, 2)
        out["ingest_s"] = round(t_done - t0, 2)
        out["rows"] = spool_rows(path)
        out["spool_mb"] = spool_size_mb(path)
        out["dropped"] = n - out["rows"]
        out["server"] = base.server_stats(url)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # os._exit follows; no close
    return out


def child_e2e(cfg: dict[str, Any]) -> dict[str, Any]:
    """``e2e``: ``benchmarks.run``'s one-tenant end to end (n events emitted, then until
    every one arrived), ours with a spool file (every event journaled before ``emit``
    returns, leased from the SQLite file, acknowledged there), the anchor as there."""
    if cfg["lib"] == "anchor":
        return base.child_e2e(cfg)
    path = spool_file(cfg, "e2e")
    lib = "ours_uncapped" if cfg["lib"] == "durable_uncapped" else "ours"
    try:
        out = base.child_e2e({**cfg, "lib": lib, "ours_options": {"spool": str(path)}})
        out["spool"] = "file"
        return out
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def child_main(raw: str) -> None:
    cfg = json.loads(raw)
    scenario = cfg["scenario"]
    try:
        started_load = os.getloadavg()[0]
        if scenario == "per_call":
            result = child_per_call(cfg)
        elif scenario == "emit_many":
            result = child_emit_many(cfg)
        elif scenario == "backlog":
            result = child_backlog(cfg)
        elif scenario == "e2e":
            result = child_e2e(cfg)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
        result["load_1min_start"] = round(started_load, 2)
        result["load_1min_end"] = round(os.getloadavg()[0], 2)
    except BaseException:
        result = {"error": traceback.format_exc()}
    result["scenario"] = scenario
    result["lib"] = cfg["lib"]
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip both libraries' exit hooks (the anchor joins its threads one by one)


# -- parent side ------------------------------------------------------------------------------


def build_rows(res: dict[str, Any], sizes: dict[str, int]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(
        scenario: str,
        o: dict[str, Any] | None,
        a: dict[str, Any] | None,
        fmt_o: Callable[[dict[str, Any]], str],
        fmt_a: Callable[[dict[str, Any]], str],
        ratio: Callable[[dict[str, Any], dict[str, Any]], str],
        target: str,
        met: Callable[[dict[str, Any], dict[str, Any]], bool] | None,
    ) -> None:
        rows.append(base.table_row(scenario, o, a, fmt_o, fmt_a, ratio, target, met))

    def us(r: dict[str, Any]) -> str:
        runs = r["us_per_call_all"]
        more = f"; means {', '.join(f'{v:.1f}' for v in runs)}" if len(runs) > 1 else ""
        return f"{r['us_per_call']:.2f} (p50 {r['us_p50']:.2f}{more})"

    def cheaper(o: dict[str, Any], a: dict[str, Any]) -> str:
        if o["us_per_call"] <= a["us_per_call"]:
            return f"{a['us_per_call'] / o['us_per_call']:.1f}x cheaper"
        return f"{o['us_per_call'] / a['us_per_call']:.1f}x DEARER"

    def rate_ratio(key: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
        return lambda o, a: f"{o[key] / a['loop_eps']:.1f}x"

    def rate(key: str) -> Callable[[dict[str, Any]], str]:
        def fmt(r: dict[str, Any]) -> str:
            values = ", ".join(f"{v:,.0f}" for v in r[key + "_all"])
            return f"{r[key]:,.0f}" + (f" (runs: {values})" if len(r[key + "_all"]) > 1 else "")

        return fmt

    def rss(r: dict[str, Any]) -> str:
        return f"{r['peak']['VmHWM']:.1f}"

    def rss_ratio(o: dict[str, Any], a: dict[str, Any]) -> str:
        return base.rss_ratio(o["peak"]["VmHWM"], a["peak"]["VmHWM"])

    def rss_met(o: dict[str, Any], a: dict[str, Any]) -> bool:
        return bool(o["peak"]["VmHWM"] <= TARGET_RSS_MB and o.get("all_ingested", False))

    if "per_call/durable" in res or "per_call/anchor" in res:
        n = sizes["per_call"]
        a = res.get("per_call/anchor")
        add(
            f"1. per-call cost, µs/call: durable emit(dict) vs track() (n={n:,})",
            res.get("per_call/durable"),
            a,
            us,
            us,
            cheaper,
            "<= track() mean",
            lambda o, a: o["us_per_call"] <= a["us_per_call"],
        )
        add(
            "1. per-call cost, µs/call: in-memory emit(dict) vs track() (same run, context)",
            res.get("per_call/memory"),
            a,
            us,
            us,
            cheaper,
            "(context)",
            None,
        )
    if "emit_many/durable" in res or "emit_many/anchor" in res:
        n = sizes["emit_many"]
        o, a = res.get("emit_many/durable"), res.get("emit_many/anchor")
        label = f"2. emit_many({n:,} dicts) into the spool, events/s"
        add(
            f"{label}: until the call returns (all journaled) vs a track() loop",
            o,
            a,
            rate("journaled_eps"),
            rate("loop_eps"),
            rate_ratio("journaled_eps"),
            f">= {TARGET_EMIT_MANY:,}/s",
            lambda o, a: o["journaled_eps"] >= TARGET_EMIT_MANY,
        )
        add(
            f"{label}: until all are in the SQLite file vs a track() loop (memory only)",
            o,
            a,
            rate("ingested_eps"),
            rate("loop_eps"),
            rate_ratio("ingested_eps"),
            f">= {TARGET_EMIT_MANY:,}/s",
            lambda o, a: o["ingested_eps"] >= TARGET_EMIT_MANY,
        )
    if any(k.startswith("backlog/") for k in res):
        n = sizes["backlog"]
        label = f"3. {n:,} events, endpoint down (503)"
        burst, paced = res.get("backlog/durable_burst"), res.get("backlog/durable_paced")
        anchor, anchor_all = res.get("backlog/anchor"), res.get("backlog/anchor_all")

        def kept(r: dict[str, Any]) -> str:
            if "rows" in r:
                return f"{r['rows']:,} on disk ({r['spool_mb']:,.0f} MB file), 0 dropped"
            return f"{r['held']:,} held, {r['dropped']:,} dropped"

        add(
            f"{label}: events kept, default queue sizes (anchor: max_queue_size 10,000)",
            burst,
            anchor,
            kept,
            kept,
            lambda o, a: "-",
            "nothing lost",
            lambda o, a: o["rows"] == n,
        )
        add(
            f"{label}: peak RSS (VmHWM), MB; ours: emit_many x {sizes['chunk']:,} as fast as "
            "accepted (on_full=block); anchor: defaults",
            burst,
            anchor,
            rss,
            rss,
            rss_ratio,
            f"<= {TARGET_RSS_MB:.0f} MB",
            rss_met,
        )

        def per_event(r: dict[str, Any]) -> str:
            held = r.get("held", r.get("rows"))
            grew = r["peak"]["VmHWM"] - r["base"]["VmHWM"]
            return (
                f"{r['peak']['VmHWM']:,.1f} (+{grew:,.1f} MB for {held:,} held: "
                f"{grew * 1024 / held:.2f} KB/event)"
            )

        add(
            f"{label}: peak RSS (VmHWM), MB; ours: producer paced to the ingest rate; "
            f"anchor: max_queue_size {n:,} (holds all)",
            paced,
            anchor_all,
            per_event,
            per_event,
            rss_ratio,
            f"<= {TARGET_RSS_MB:.0f} MB",
            rss_met,
        )

    def arrival(r: dict[str, Any]) -> str:
        arrived = "all arrived" if r["all_arrived"] else f"{r['arrived']:,} arrived"
        return f"{r['events_per_s']:,.0f} ({r['elapsed_s']:.2f} s, {arrived})"

    if "e2e/durable" in res or "e2e/anchor" in res:
        add(
            f"4. end-to-end events/s, 1 tenant (n={sizes['e2e']:,}): durable emit "
            "(journal, SQLite, lease, send, ack) vs track() (memory only)",
            res.get("e2e/durable"),
            res.get("e2e/anchor"),
            arrival,
            arrival,
            lambda o, a: f"{o['events_per_s'] / a['events_per_s']:.1f}x",
            f">= {TARGET_E2E:.0f}x, all arrive",
            lambda o, a: o["all_arrived"] and o["events_per_s"] >= TARGET_E2E * a["events_per_s"],
        )
        add(
            "4. the same, durable, with the request-rate cap off (max_requests_per_second=0)",
            res.get("e2e/durable_uncapped"),
            res.get("e2e/anchor"),
            arrival,
            arrival,
            lambda o, a: f"{o['events_per_s'] / a['events_per_s']:.1f}x",
            "(context)",
            None,
        )
    return rows


def problems(res: dict[str, Any], rows: list[dict[str, str]], sizes: dict[str, int]) -> list[str]:
    out, ok = base.common_problems(res, rows, ours=("durable", "memory"), missed=("NO", "n/a"))
    for key, r in ok:
        if key.startswith(("per_call/durable", "per_call/memory")):
            if not r.get("delivered_in_time"):
                out.append(f"{key}: flush() did not deliver every event within 60 s")
            if r.get("close_ok") is False:
                out.append(f"{key}: close() returned False")
            if r.get("arrived") != r.get("expected"):
                out.append(f"{key}: {r.get('arrived')} events arrived, not {r.get('expected')}")
        for rep in r.get("reps", ()):
            if rep.get("rows") != rep.get("rows_expected", rep.get("rows")):
                out.append(f"{key}: the spool holds {rep['rows']} rows, not {rep['rows_expected']}")
            if rep.get("all_ingested") is False:
                out.append(f"{key}: the encoder did not finish ingesting within 120 s")
            if rep.get("refused"):
                out.append(f"{key}: {rep['refused']} events refused")
        if key.startswith("backlog/durable"):
            if r.get("rows") != sizes["backlog"]:
                out.append(f"{key}: {r.get('rows')} rows in the spool, not {sizes['backlog']}")
            if r.get("all_ingested") is False:
                out.append(f"{key}: the encoder did not finish ingesting within 300 s")
    return out


def parent_main(args: argparse.Namespace) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    wanted = base.wanted_scenarios(args, SCENARIOS)
    if wanted is None:
        return 2
    info = base.machine()
    mode = "quick" if args.quick else "full"
    load_start = os.getloadavg()
    print(
        f"# durable spool vs segment-analytics-python ({mode} run; {info['cpus']} CPUs, "
        f"{info['cpu'] or 'unknown CPU'}, Python {info['python']}; load average at start "
        f"{load_start[0]:.2f})",
        flush=True,
    )
    started = time.perf_counter()
    tmpdir = tempfile.mkdtemp(prefix="selligent-durable-bench-", dir=args.tmpdir)

    def config(scenario: str, lib: str, url: str) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "lib": lib,
            "url": url,
            "n": sizes[scenario],
            "warmup": sizes["warmup"],
            "reps": sizes["reps"],
            "chunk": sizes["chunk"],
            "tmpdir": tmpdir,
        }

    try:
        res = base.run_scenarios(
            wanted, LIBS, FAULTS, CAP, config, module="benchmarks.durable", prefix=RESULT_PREFIX
        )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if res is None:
        return 2
    total = time.perf_counter() - started
    load_end = os.getloadavg()
    rows = build_rows(res, sizes)
    print()
    print(base.markdown(rows))
    print()
    print(
        f"Total wall time {total:.0f} s; load average (1 min) {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end."
    )
    notes = problems(res, rows, sizes)
    load = {"start": load_start, "end": load_end}
    return base.finish(args, notes, mode, sizes, FAULTS, info, total, rows, res, load_average=load)


def main(argv: list[str] | None = None) -> int:
    parser = base.make_parser(
        "python -m benchmarks.durable",
        "The durable spool against segment-analytics-python 2.4, side by side.",
        SCENARIOS,
    )
    parser.add_argument(
        "--tmpdir", metavar="DIR", help="where the spool files go (default: the system's temp)"
    )
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0  # not reached: the child exits through os._exit
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
