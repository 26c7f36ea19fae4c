"""Benchmark selligent-segment against segment-analytics-python 2.4 in one run.

Usage (from the repository root)::

    python -m benchmarks.run [--quick] [--json FILE] [--only per_call,e2e,...] [--check]

One ``LocalSegment`` server (``python -m selligent_segment.testing --port 0``) is started
in its own process and shared by every measurement. Each scenario runs once per library,
each time in a fresh child process of this script (so peak RSS and thread counts are per
scenario); the server is reset (``POST /_reset``, faults cleared) before every child. The
child reports one JSON line on stdout; the parent prints a markdown table of the results.

Scenarios (sizes of the full run; ``--quick`` shrinks them for a smoke test):

1. ``per_call``: mean microseconds per ``Emitter.emit(dict)``, per ``emit(CallbackRecord)``
   and per ``Client.track(...)`` (also with its consumer thread stopped) over 20,000 calls
   after 1,000 warm-up calls, then p50/p99 over 20,000 more timed one by one; queues large
   enough that nothing is refused. Only the calls are timed, not delivery. Five rounds, the
   libraries interleaved (ours, anchor, ours, ...), each library's median round reported,
   so a spell of a slow host does not fall on one side only.
2. ``e2e``: 50,000 events, one write key; events/s from the first call until the server's
   ``/_stats`` shows every message id (polled every 50 ms). Ours also once with the
   request-rate cap off (``max_requests_per_second=0``): the default, 50 requests per
   second, follows Segment's partner guidance and bounds one write key at about 55,000 of
   these events per second; the second run shows what the rest of the path allows.
3. ``tenants``: 1,000 tenants x 20 events; one Emitter with 1,000 write keys against 1,000
   ``Client`` objects; time until all arrived, peak thread count, peak RSS.
4. ``fault``: server faults 20% 500, 5% 429 (Retry-After 1), 5% dropped connections;
   20,000 events, flush with a 120 s budget; events lost and events/s.
5. ``burst``: 50,000 events at once with default settings for both; events lost, peak RSS.
6. ``queued``: 50,000 events held in memory while the server answers 503 (Retry-After 30 s);
   peak RSS and KB per queued event.

Exit status: 0 when the run completed (targets missed are shown in the table), 2 when the
server could not be started; with ``--check`` also 1 when a target is missed or a
measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")
ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "

FULL = {
    "per_call": 20_000,
    "warmup": 1_000,
    "e2e": 50_000,
    "tenants": 1_000,
    "per_tenant": 20,
    "fault": 20_000,
    "burst": 50_000,
    "queued": 50_000,
    "per_call_rounds": 5,
}
QUICK = {
    "per_call": 2_000,
    "warmup": 200,
    "e2e": 5_000,
    "tenants": 100,
    "per_tenant": 5,
    "fault": 1_000,
    "burst": 15_000,
    "queued": 10_000,
    "per_call_rounds": 1,
}
FAULT_MIX = {"seed": 1, "rates": {"500": 0.2, "429": 0.05, "drop": 0.05}, "retry_after": 1}
OUTAGE = {"outage": 503, "retry_after": 30}  # "queued": every request refused, nothing dropped
FAULTS = {"fault": FAULT_MIX, "queued": OUTAGE}

SCENARIOS = ("per_call", "e2e", "tenants", "fault", "burst", "queued")
LIBS = {
    "per_call": ("ours_dict", "ours_record", "anchor", "anchor_alone"),
    "e2e": ("ours", "ours_uncapped", "anchor"),
    "tenants": ("ours", "anchor"),
    "fault": ("ours", "anchor"),
    "burst": ("ours", "anchor"),
    "queued": ("ours", "anchor"),
}
# How long a child may wait for delivery (s), and its hard wall-clock cap (s).
WAIT = {
    "per_call": 60.0,
    "e2e": 90.0,
    "tenants": 90.0,
    "fault": 120.0,
    "burst": 120.0,
    "queued": 20.0,
}
CAP = {
    "per_call": 150.0,
    "e2e": 180.0,
    "tenants": 200.0,
    "fault": 240.0,
    "burst": 240.0,
    "queued": 90.0,
}

EVENT = "Email Delivered"
SUBJECT = "Your March newsletter"
CAMPAIGN = "March newsletter"
HTTP_TIMEOUT = 5.0
POLL = 0.05


# -- shared helpers ---------------------------------------------------------------------------


def http_json(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


# -- the events -------------------------------------------------------------------------------


def email_of(i: int) -> str:
    return f"user{i}@example.com"


def record(i: int, tenant: str | None = None) -> dict[str, Any]:
    """Callback record ``i`` in the library's dict form."""
    rec: dict[str, Any] = {
        "type": "delivered",
        "email": email_of(i),
        "event_id": f"ev-{i}",
        "email_id": f"m{i % 97}",
        "email_subject": SUBJECT,
        "campaign_id": f"c{i % 7}",
        "campaign_name": CAMPAIGN,
    }
    if tenant is not None:
        rec["tenant"] = tenant
    return rec


def track_args(i: int, integration: dict[str, str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The same event for ``Client.track``: (anonymous_id, properties, context).

    Same identity (no user id, so the email is the anonymousId and context.traits.email),
    same properties, same event name; context.integration as the library sends it.
    """
    email = email_of(i)
    properties = {
        "email_id": f"m{i % 97}",
        "email_subject": SUBJECT,
        "campaign_id": f"c{i % 7}",
        "campaign_name": CAMPAIGN,
    }
    context = {"traits": {"email": email}, "integration": dict(integration)}
    return email, properties, context


# -- child side -------------------------------------------------------------------------------


class Probe:
    """Peak of ``threading.active_count()``, sampled by the caller."""

    def __init__(self) -> None:
        self.base = threading.active_count()
        self.peak = self.base

    def sample(self) -> None:
        n = threading.active_count()
        if n > self.peak:
            self.peak = n


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def server_stats(url: str) -> dict[str, int]:
    stats: dict[str, int] = http_json("GET", url + "/_stats")
    return stats


def wait_arrived(
    url: str,
    expected: int,
    deadline: float,
    probe: Probe,
    drained: Callable[[], bool] | None = None,
) -> tuple[bool, float, dict[str, int]]:
    """Poll ``/_stats`` every 50 ms until ``expected`` unique ids arrived.

    Gives up at ``deadline`` or, when ``drained()`` says the client holds nothing more and
    the server's count has not moved for a second, early. Returns (all arrived, time, stats).
    """
    last = -1
    still_since = time.perf_counter()
    while True:
        probe.sample()
        now = time.perf_counter()
        try:
            stats = server_stats(url)
        except OSError:
            stats = {"unique_message_ids": last}
        got = stats.get("unique_message_ids", 0)
        if got >= expected:
            return True, now, stats
        if got != last:
            last, still_since = got, now
        elif drained is not None and now - still_since > 1.0 and drained():
            return False, now, stats
        if now >= deadline:
            return False, now, stats
        time.sleep(POLL)


def ours_stats(emitter: Any) -> dict[str, Any]:
    try:
        s = emitter.stats()
        return {
            "accepted": s.accepted,
            "delivered": s.delivered,
            "retried": s.retried,
            "queued": s.queued,
            "rejected": dict(s.rejected),
            "dropped": dict(s.dropped),
            "refused": dict(s.refused),
            "requests": s.requests,
        }
    except Exception as exc:  # report, do not fail the measurement
        return {"error": repr(exc)}


def ours_threads(emitter: Any) -> int | None:
    try:
        return int(emitter.thread_count())
    except Exception:
        return None


def make_ours(url: str, **options: Any) -> Any:
    from selligent_segment._emitter import Emitter

    return Emitter(endpoint=url, **options)


def make_anchor(url: str, key: str, **options: Any) -> Any:
    from segment.analytics import Client

    return Client(key, host=url, **options)


def anchor_drained(clients: list[Any]) -> bool:
    return all(c.queue.unfinished_tasks == 0 for c in clients)


def anchor_wait(clients: list[Any], timeout: float) -> bool:
    """``Client.flush()`` with a time limit (the real one is an unbounded queue.join())."""
    deadline = time.monotonic() + timeout
    while not anchor_drained(clients):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def ours_close(emitter: Any, timeout: float = 10.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        ok = emitter.close(timeout=timeout)
        return {"close_ok": bool(ok), "close_s": round(time.perf_counter() - t0, 3)}
    except Exception:
        return {"close_error": traceback.format_exc()}


class Refusals:
    """Counts calls that did not accept an event, keeping the first traceback."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: dict[str, int] = {}
        self.first: str | None = None

    def add(self, kind: str, tb: str | None = None) -> None:
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.first is None and tb is not None:
            self.first = tb

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"refused": self.count, "refused_by": self.kinds}
        if self.first is not None:
            out["first_refusal"] = self.first[-2000:]
        return out


def emit_all(
    emitter: Any, plan: Iterable[tuple[int, str | None]], probe: Probe, refusals: Refusals
) -> None:
    """emit record ``idx`` (for ``tenant``) for each pair of ``plan``, built just in time."""
    emit = emitter.emit
    for i, (idx, tenant) in enumerate(plan):
        try:
            if not emit(record(idx, tenant)):
                refusals.add("returned False")
        except Exception as exc:
            refusals.add(type(exc).__name__, traceback.format_exc())
        if not i & 1023:
            probe.sample()


def track_all(
    clients: list[Any], plan: Iterable[tuple[int, int]], probe: Probe, refusals: Refusals
) -> None:
    """track event ``idx`` on ``clients[k]`` for each pair of ``plan``, built just in time."""
    integration = integration_value()
    tracks = [c.track for c in clients]
    for i, (idx, k) in enumerate(plan):
        anon, props, ctx = track_args(idx, integration)
        try:
            ok, _ = tracks[k](anonymous_id=anon, event=EVENT, properties=props, context=ctx)
            if not ok:
                refusals.add("returned False (queue full)")
        except Exception as exc:
            refusals.add(type(exc).__name__, traceback.format_exc())
        if not i & 1023:
            probe.sample()


def integration_value() -> dict[str, str]:
    """context.integration as the library sends it (read without importing the library)."""
    from importlib import metadata

    try:
        version = metadata.version("selligent-segment")
    except metadata.PackageNotFoundError:
        version = "0"
    return {"name": "selligent", "version": version}


def child_per_call(cfg: dict[str, Any]) -> dict[str, Any]:
    """Pass 1 times n calls as a whole (the mean); pass 2 times n more one by one (p50, p99)."""
    url, lib, n, warm = cfg["url"], cfg["lib"], cfg["n"], cfg["warmup"]
    total = warm + 2 * n
    out: dict[str, Any] = {"n": n}
    clock = time.perf_counter
    durations: list[float] = []
    probe = Probe()
    out["rss_base_mb"] = rss_mb()
    if lib.startswith("anchor"):
        integ = integration_value()
        client = make_anchor(url, "bench-key", max_queue_size=total + 1000)
        if lib == "anchor_alone":  # the call alone: stop the consumer before the first call
            for consumer in client.consumers:
                consumer.pause()
                consumer.join(2.0)
        args = [track_args(i, integ) for i in range(total)]
        track = client.track
        refused = 0
        for anon, props, ctx in args[:warm]:
            track(anonymous_id=anon, event=EVENT, properties=props, context=ctx)
        timed = args[warm : warm + n]
        t0 = time.perf_counter()
        for anon, props, ctx in timed:
            if not track(anonymous_id=anon, event=EVENT, properties=props, context=ctx)[0]:
                refused += 1
        elapsed = time.perf_counter() - t0
        for anon, props, ctx in args[warm + n :]:
            t = clock()
            track(anonymous_id=anon, event=EVENT, properties=props, context=ctx)
            durations.append(clock() - t)
        probe.sample()
        out["refused"] = refused
        delivered_in_time = lib == "anchor" and anchor_wait([client], WAIT["per_call"])
    else:
        emitter = make_ours(url, write_key="bench-key", max_pending=total + 1000)
        if lib == "ours_record":
            from selligent_segment._record import CallbackRecord

            items: list[Any] = [CallbackRecord.from_dict(record(i)) for i in range(total)]
        else:
            items = [record(i) for i in range(total)]
        emit = emitter.emit
        refused = 0
        for item in items[:warm]:
            emit(item)
        timed = items[warm : warm + n]
        t0 = time.perf_counter()
        for item in timed:
            if not emit(item):
                refused += 1
        elapsed = time.perf_counter() - t0
        for item in items[warm + n :]:
            t = clock()
            emit(item)
            durations.append(clock() - t)
        probe.sample()
        out["refused"] = refused
        delivered_in_time = bool(emitter.flush(timeout=WAIT["per_call"]))
        out["threads_lib"] = ours_threads(emitter)
        out["lib_stats"] = ours_stats(emitter)
        out.update(ours_close(emitter))
    out["us_per_call"] = round(elapsed / n * 1e6, 3)
    durations.sort()
    out["us_p50"] = round(durations[len(durations) // 2] * 1e6, 3)
    out["us_p99"] = round(durations[len(durations) * 99 // 100] * 1e6, 3)
    out["calls_s"] = round(elapsed, 4)
    out["delivered_in_time"] = delivered_in_time
    stats = server_stats(url)
    out["server"] = stats
    out["arrived"] = stats["unique_message_ids"]
    out["rss_peak_mb"] = rss_mb()
    out["threads_peak"] = probe.peak
    return out


def ours_arrival(
    emitter: Any, url: str, expected: int, deadline: float, probe: Probe, out: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """Wait until ``expected`` ids arrived, then flush, record the emitter's figures, close."""
    _, t_done, stats = wait_arrived(
        url, expected, deadline, probe, lambda: emitter.stats().queued == 0
    )
    out["flush_ok"] = bool(emitter.flush(timeout=10))
    out["threads_lib"] = ours_threads(emitter)
    out["lib_stats"] = ours_stats(emitter)
    out.update(ours_close(emitter))
    return t_done, stats


def throughput(
    out: dict[str, Any],
    url: str,
    n: int,
    stats: dict[str, Any],
    times: tuple[float, float, float],
    refusals: Refusals,
    probe: Probe,
) -> None:
    """Fill ``out`` with arrival, rate, server, memory and thread figures of one run."""
    t0, t_calls, t_done = times
    arrived = stats.get("unique_message_ids", 0)
    elapsed = t_done - t0
    out.update(refusals.report())
    out["calls_s"] = round(t_calls - t0, 3)
    out["elapsed_s"] = round(elapsed, 3)
    out["all_arrived"] = arrived >= n
    out["arrived"] = arrived
    out["events_per_s"] = round(arrived / elapsed, 1) if elapsed > 0 else None
    out["server"] = server_stats(url)
    out["rss_peak_mb"] = rss_mb()
    out["threads_peak"] = probe.peak


def child_e2e(cfg: dict[str, Any]) -> dict[str, Any]:
    url, lib, n = cfg["url"], cfg["lib"], cfg["n"]
    out: dict[str, Any] = {"n": n}
    probe = Probe()
    refusals = Refusals()
    out["rss_base_mb"] = rss_mb()
    deadline_after = WAIT["e2e"]
    if lib == "anchor":
        client = make_anchor(url, "bench-key", max_queue_size=n + 1000)
        t0 = time.perf_counter()
        track_all([client], ((i, 0) for i in range(n)), probe, refusals)
        t_calls = time.perf_counter()
        _, t_done, stats = wait_arrived(
            url,
            n - refusals.count,
            t_calls + deadline_after,
            probe,
            lambda: anchor_drained([client]),
        )
        anchor_wait([client], 10)
    else:
        options = dict(cfg.get("ours_options", {}))
        if lib == "ours_uncapped":  # the request-rate cap off (see the module docstring)
            options["max_requests_per_second"] = 0
        emitter = make_ours(url, write_key="bench-key", **options)
        t0 = time.perf_counter()
        emit_all(emitter, ((i, None) for i in range(n)), probe, refusals)
        t_calls = time.perf_counter()
        t_done, stats = ours_arrival(
            emitter, url, n - refusals.count, t_calls + deadline_after, probe, out
        )
    throughput(out, url, n, stats, (t0, t_calls, t_done), refusals, probe)
    return out


def child_tenants(cfg: dict[str, Any]) -> dict[str, Any]:
    url, lib = cfg["url"], cfg["lib"]
    tenants, per = cfg["tenants"], cfg["per_tenant"]
    n = tenants * per
    out: dict[str, Any] = {"n": n, "tenants": tenants, "per_tenant": per}
    probe = Probe()
    refusals = Refusals()
    out["rss_base_mb"] = rss_mb()
    order = [(i * tenants + j, j) for i in range(per) for j in range(tenants)]
    if lib == "anchor":
        t_setup = time.perf_counter()
        clients = [make_anchor(url, f"wk-{j}") for j in range(tenants)]
        out["setup_s"] = round(time.perf_counter() - t_setup, 3)
        probe.sample()
        t0 = time.perf_counter()
        track_all(clients, order, probe, refusals)
        t_calls = time.perf_counter()
        _, t_done, stats = wait_arrived(
            url,
            n - refusals.count,
            t_calls + WAIT["tenants"],
            probe,
            lambda: anchor_drained(clients),
        )
        # Stop the consumers without joining 1,000 threads one by one; the child exits next.
        for c in clients:
            for consumer in c.consumers or ():
                consumer.pause()
    else:
        keys = {f"t{j}": f"wk-{j}" for j in range(tenants)}
        t_setup = time.perf_counter()
        emitter = make_ours(url, write_keys=keys)
        out["setup_s"] = round(time.perf_counter() - t_setup, 3)
        names = [f"t{j}" for j in range(tenants)]
        t0 = time.perf_counter()
        emit_all(emitter, ((idx, names[j]) for idx, j in order), probe, refusals)
        t_calls = time.perf_counter()
        t_done, stats = ours_arrival(
            emitter, url, n - refusals.count, t_calls + WAIT["tenants"], probe, out
        )
    throughput(out, url, n, stats, (t0, t_calls, t_done), refusals, probe)
    out["threads_background"] = probe.peak - 1  # the main thread does not count
    return out


def child_delivery(cfg: dict[str, Any], *, defaults: bool) -> dict[str, Any]:
    """``fault`` and ``burst``: send n, flush with a budget, count what arrived."""
    url, lib, n, scenario = cfg["url"], cfg["lib"], cfg["n"], cfg["scenario"]
    out: dict[str, Any] = {"n": n}
    probe = Probe()
    refusals = Refusals()
    out["rss_base_mb"] = rss_mb()
    budget = WAIT[scenario]
    if lib == "anchor":
        options = {} if defaults else {"max_queue_size": n + 1000}
        client = make_anchor(url, "bench-key", **options)
        t0 = time.perf_counter()
        track_all([client], ((i, 0) for i in range(n)), probe, refusals)
        t_calls = time.perf_counter()
        flushed = anchor_wait([client], budget)
        t_done = time.perf_counter()
        probe.sample()
    else:
        emitter = make_ours(url, write_key="bench-key", **cfg.get("ours_options", {}))
        t0 = time.perf_counter()
        emit_all(emitter, ((i, None) for i in range(n)), probe, refusals)
        t_calls = time.perf_counter()
        try:
            flushed = bool(emitter.flush(timeout=budget))
        except Exception:
            flushed = False
            out["flush_error"] = traceback.format_exc()
        t_done = time.perf_counter()
        probe.sample()
        out["threads_lib"] = ours_threads(emitter)
        out["lib_stats"] = ours_stats(emitter)
        out.update(ours_close(emitter))
        out["lib_stats_after_close"] = ours_stats(emitter)
    stats = server_stats(url)
    arrived = stats.get("unique_message_ids", 0)
    elapsed = t_done - t0
    out.update(refusals.report())
    out["flushed"] = flushed
    out["calls_s"] = round(t_calls - t0, 3)
    out["elapsed_s"] = round(elapsed, 3)
    out["arrived"] = arrived
    out["lost"] = n - arrived
    out["events_per_s"] = round(arrived / elapsed, 1) if elapsed > 0 else None
    out["server"] = stats
    out["rss_peak_mb"] = rss_mb()
    out["threads_peak"] = probe.peak
    return out


def child_queued(cfg: dict[str, Any]) -> dict[str, Any]:
    """Hold n events with the endpoint down (503, Retry-After 30 s): memory per queued event."""
    url, lib, n = cfg["url"], cfg["lib"], cfg["n"]
    out: dict[str, Any] = {"n": n}
    probe = Probe()
    refusals = Refusals()
    out["rss_base_mb"] = rss_mb()
    deadline = time.monotonic() + WAIT["queued"]
    if lib == "anchor":
        client = make_anchor(url, "bench-key", max_queue_size=n + 1000)
        track_all([client], ((i, 0) for i in range(n)), probe, refusals)
        time.sleep(1.0)  # the consumer has taken (and serialised) its first batch
        out["held"] = client.queue.qsize()
    else:
        emitter = make_ours(url, write_key="bench-key")
        emit_all(emitter, ((i, None) for i in range(n)), probe, refusals)
        # wait for the encoder to move everything from the inbox into the spool
        while emitter._intake.has_work() and time.monotonic() < deadline:
            time.sleep(POLL)
        time.sleep(0.5)
        out["held"] = ours_stats(emitter).get("queued")
        out["lib_stats"] = ours_stats(emitter)
    probe.sample()
    out.update(refusals.report())
    out["server"] = server_stats(url)
    out["rss_peak_mb"] = rss_mb()
    out["kb_per_event"] = round((out["rss_peak_mb"] - out["rss_base_mb"]) * 1024 / n, 2)
    out["threads_peak"] = probe.peak
    return out


def child_main(raw: str) -> None:
    cfg = json.loads(raw)
    scenario = cfg["scenario"]
    # Keep the anchor's per-event "queue is full" warnings from costing a terminal write
    # each; they still go through logging (to stderr, captured by the parent).
    try:
        if scenario == "per_call":
            result = child_per_call(cfg)
        elif scenario == "e2e":
            result = child_e2e(cfg)
        elif scenario == "tenants":
            result = child_tenants(cfg)
        elif scenario == "fault":
            result = child_delivery(cfg, defaults=False)
        elif scenario == "burst":
            result = child_delivery(cfg, defaults=True)
        elif scenario == "queued":
            result = child_queued(cfg)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    except BaseException:
        result = {"error": traceback.format_exc()}
    result["scenario"] = scenario
    result["lib"] = cfg["lib"]
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip both libraries' exit hooks: everything was flushed or measured above, and the
    # anchor's hook joins its consumer threads one by one.
    os._exit(0)


# -- parent side ------------------------------------------------------------------------------


class Server:
    """The LocalSegment process, started once; always stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "selligent_segment.testing", "--port", "0"]
        self.proc = subprocess.Popen(  # stdin stays open: the server stops when it closes
            cmd,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        line: list[bytes] = []
        stdout = self.proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        first = line[0].decode(errors="replace").strip() if line else ""
        if not first.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(
                f"server did not start (first line {first!r}); stderr:\n{self.stderr_tail()}"
            )
        self.url = first.split(None, 1)[1].rstrip("/")
        self.reset()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, limit: int = 3000) -> str:
        try:
            self._err.seek(0)
            return self._err.read().decode(errors="replace")[-limit:]
        except (OSError, ValueError):
            return ""

    def reset(self, faults: dict[str, Any] | None = None) -> None:
        http_json("POST", self.url + "/_faults", faults or {})
        http_json("POST", self.url + "/_reset", {})
        stats = http_json("GET", self.url + "/_stats")
        if stats.get("unique_message_ids") or stats.get("requests"):
            raise RuntimeError(f"server did not reset: {stats}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        with contextlib.suppress(OSError, ValueError):
            if proc.stdout is not None:
                proc.stdout.close()

    def close(self) -> None:
        self.stop()
        self._err.close()


def run_child(
    cfg: dict[str, Any], cap: float, module: str = "benchmarks.run", prefix: str = RESULT_PREFIX
) -> dict[str, Any]:
    """Run ``python -m module --child CFG`` with a hard time limit; its result line, or an
    error, plus wall time and the count, head and tail of what it wrote to stderr."""
    cmd = [sys.executable, "-m", module, "--child", json.dumps(cfg)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        timed_out = False
        rc: int | None = None
        try:
            rc = subprocess.run(
                cmd, stdout=out, stderr=err, cwd=ROOT, env=child_env(), timeout=cap
            ).returncode
        except subprocess.TimeoutExpired:  # subprocess.run has killed the child
            timed_out = True
        wall = time.perf_counter() - t0
        out.seek(0)
        stdout = out.read().decode(errors="replace")
        err.seek(0)
        head = err.read(4000).decode(errors="replace")
        size = err.seek(0, os.SEEK_END)
        err.seek(max(0, size - 4000))
        tail = err.read().decode(errors="replace")
        err.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: err.read(1 << 20), b""))
    result: dict[str, Any] | None = None
    for line in stdout.splitlines():
        if line.startswith(prefix):
            result = json.loads(line[len(prefix) :])
    if result is None:
        reason = f"timed out after {cap:.0f} s (killed)" if timed_out else f"exit status {rc}"
        result = {"error": f"child produced no result: {reason}"}
    result["wall_s"] = round(wall, 2)
    result["stderr_lines"] = lines
    if size:
        result["stderr_head"] = "\n".join(head.splitlines()[:15])
        result["stderr_tail"] = "\n".join(tail.splitlines()[-15:])
    return result


def wanted_scenarios(args: argparse.Namespace, known: Sequence[str]) -> list[str] | None:
    """The scenarios ``--only`` names (all by default); None, said, when one is unknown."""
    wanted = [s.strip() for s in args.only.split(",")] if args.only else list(known)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return None
    return wanted


def run_scenarios(
    wanted: Sequence[str],
    libs: Mapping[str, Sequence[str]],
    faults: Mapping[str, Any],
    caps: Mapping[str, float],
    config: Callable[[str, str, str], dict[str, Any]],
    rounds: Callable[[str], int] = lambda scenario: 1,
    module: str = "benchmarks.run",
    prefix: str = RESULT_PREFIX,
) -> dict[str, Any] | None:
    """Each (scenario, library) in a fresh child against one LocalSegment, reset (with the
    scenario's faults) before every child; ``config(scenario, lib, url)`` is the child's
    settings. A scenario of several rounds runs its libraries interleaved and keeps each
    library's median round. Returns results by ``scenario/lib``, plus ``_ran`` and
    ``_rounds``; None (said on stderr) when the server cannot start."""
    res: dict[str, Any] = {"_ran": {}, "_rounds": {}}
    server = Server()
    try:
        try:
            server.start()
        except (RuntimeError, OSError) as exc:
            print(f"cannot start the LocalSegment server: {exc}", file=sys.stderr)
            return None
        for scenario in wanted:
            res["_ran"][scenario] = True
            order = [lib for _ in range(rounds(scenario)) for lib in libs[scenario]]
            for lib in order:
                key = f"{scenario}/{lib}"
                if not server.alive():
                    print("  server died; restarting it", file=sys.stderr, flush=True)
                    server.close()
                    server = Server()
                    server.start()
                try:
                    server.reset(faults.get(scenario))
                except (OSError, RuntimeError) as exc:
                    r: dict[str, Any] = {"error": f"could not reset the server: {exc!r}"}
                else:
                    print(f"  running {key} ...", end="", file=sys.stderr, flush=True)
                    r = run_child(config(scenario, lib, server.url), caps[scenario], module, prefix)
                    status = "ERROR" if "error" in r else "ok"
                    print(f" {status} ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
                res["_rounds"].setdefault(key, []).append(r)
                res[key] = median_round(res["_rounds"][key])
        with contextlib.suppress(OSError, RuntimeError):
            server.reset()
    finally:
        server.close()
    return res


def common_problems(
    res: dict[str, Any], rows: list[dict[str, str]], ours: tuple[str, ...], missed: tuple[str, ...]
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Failed runs (the same error said once), our library writing to stderr, and rows
    whose ``met`` is in ``missed``; with every (key, round) that did not fail, for the
    caller's own checks."""
    out: list[str] = []
    seen: dict[str, str] = {}
    ok: list[tuple[str, dict[str, Any]]] = []
    for key, r in ((k, r) for k, runs in res["_rounds"].items() for r in runs):
        if "error" in r:
            text = r["error"].strip()
            if text in seen:
                out.append(f"{key}: failed with the same error as {seen[text]}")
            else:
                seen[text] = key
                out.append(f"{key}: failed:\n{text}")
                if r.get("stderr_tail"):
                    out.append(f"{key}: stderr tail:\n{r['stderr_tail']}")
            continue
        ok.append((key, r))
        if key.split("/")[1].startswith(ours) and r.get("stderr_lines"):
            out.append(
                f"{key}: the library wrote {r['stderr_lines']} line(s) to stderr; first ones:\n"
                f"{r.get('stderr_head', '')}"
            )
    for row in rows:
        if row["met"] in missed:
            out.append(f"target missed: {row['scenario']}: {row['ours']} vs {row['anchor']}")
    return out, ok


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a scenario's rounds for one library, the one with the median ``us_per_call``
    (the other rounds' figures under ``rounds_us_per_call``); a failed round wins."""
    failed = [r for r in rounds if "error" in r or "us_per_call" not in r]
    if failed or len(rounds) == 1:
        return failed[0] if failed else rounds[0]
    ordered = sorted(rounds, key=lambda r: float(r["us_per_call"]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_us_per_call"] = [r["us_per_call"] for r in rounds]
    return chosen


def rss_ratio(ours: float, anchor: float) -> str:
    if ours <= anchor:
        return f"{anchor / ours:.1f}x smaller"
    return f"{ours / anchor:.1f}x LARGER"


Format = Callable[[dict[str, Any]], str]
Compare = Callable[[dict[str, Any], dict[str, Any]], _T]


def _cell(r: dict[str, Any] | None, fmt: Format) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return "ERROR"
    try:
        return fmt(r)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "n/a"


def table_row(
    scenario: str,
    o: dict[str, Any] | None,
    a: dict[str, Any] | None,
    fmt_o: Format,
    fmt_a: Format,
    ratio: Compare[str],
    target: str,
    met: Compare[bool] | None,
) -> dict[str, str]:
    """One row of the table: our result ``o`` against the anchor's ``a``. A run that failed
    shows as ERROR, a figure that cannot be computed as n/a, and then ``met`` as n/a."""
    ratio_text, met_text = "", "-" if met is None else "n/a"
    if o is not None and a is not None and "error" not in o and "error" not in a:
        try:
            ratio_text = ratio(o, a)
            if met is not None:
                met_text = "yes" if met(o, a) else "NO"
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            ratio_text = "n/a"
    return {
        "scenario": scenario,
        "ours": _cell(o, fmt_o),
        "anchor": _cell(a, fmt_a),
        "ratio": ratio_text,
        "target": target,
        "met": met_text,
    }


def build_rows(res: dict[str, Any], sizes: dict[str, int]) -> list[dict[str, str]]:
    """The table: one row per measured quantity; a failed run shows as ERROR."""
    rows: list[dict[str, str]] = []
    ran = res.get("_ran", {})

    def add(
        scenario: str,
        o: dict[str, Any] | None,
        a: dict[str, Any] | None,
        fmt: Format,
        ratio: Compare[str],
        target: str,
        met: Compare[bool] | None,
    ) -> None:
        rows.append(table_row(scenario, o, a, fmt, fmt, ratio, target, met))

    def add_rss(label: str, o: dict[str, Any] | None, a: dict[str, Any] | None) -> None:
        add(
            f"{label}: peak RSS, MB",
            o,
            a,
            lambda r: f"{r['rss_peak_mb']:.1f}",
            lambda o, a: rss_ratio(o["rss_peak_mb"], a["rss_peak_mb"]),
            "-",
            None,
        )

    def arrived(r: dict[str, Any]) -> str:
        return "all arrived" if r["all_arrived"] else f"only {r['arrived']:,} arrived"

    if "per_call" in ran:
        a = res.get("per_call/anchor")
        n_rounds = sizes.get("per_call_rounds", 1)
        per_call_rounds = f", median of {n_rounds} rounds" if n_rounds > 1 else ""
        for lib, label in (("ours_dict", "emit(dict)"), ("ours_record", "emit(CallbackRecord)")):
            add(
                f"1. per-call cost, µs/call: {label} vs track() (n={sizes['per_call']:,}"
                + per_call_rounds
                + ")",
                res.get(f"per_call/{lib}"),
                a,
                lambda r: f"{r['us_per_call']:.2f} (p50 {r['us_p50']:.2f})",
                lambda o, a: f"{a['us_per_call'] / o['us_per_call']:.1f}x cheaper",
                "<= 1/5 of track()",
                lambda o, a: o["us_per_call"] * 5 <= a["us_per_call"],
            )
        add(
            "1. per-call cost, µs/call: emit(dict) vs track() with its consumer thread stopped",
            res.get("per_call/ours_dict"),
            res.get("per_call/anchor_alone"),
            lambda r: f"{r['us_per_call']:.2f} (p50 {r['us_p50']:.2f})",
            lambda o, a: f"{a['us_per_call'] / o['us_per_call']:.1f}x cheaper",
            "(context)",
            None,
        )
    if "e2e" in ran:
        add(
            f"2. end-to-end events/s, 1 tenant (n={sizes['e2e']:,})",
            res.get("e2e/ours"),
            res.get("e2e/anchor"),
            lambda r: f"{r['events_per_s']:,.0f} ({arrived(r)}, {r['elapsed_s']:.2f} s)",
            lambda o, a: f"{o['events_per_s'] / a['events_per_s']:.1f}x",
            ">= 3x, all arrive",
            lambda o, a: o["all_arrived"] and o["events_per_s"] >= 3 * a["events_per_s"],
        )
        add(
            "2. end-to-end events/s, 1 tenant, request-rate cap off (max_requests_per_second=0)",
            res.get("e2e/ours_uncapped"),
            res.get("e2e/anchor"),
            lambda r: f"{r['events_per_s']:,.0f} ({arrived(r)}, {r['elapsed_s']:.2f} s)",
            lambda o, a: f"{o['events_per_s'] / a['events_per_s']:.1f}x",
            "(context)",
            None,
        )
    if "tenants" in ran:
        o, a = res.get("tenants/ours"), res.get("tenants/anchor")
        label = f"3. {sizes['tenants']:,} tenants x {sizes['per_tenant']}"
        add(
            f"{label}: seconds from first call until all arrived (events/s)",
            o,
            a,
            lambda r: f"{r['elapsed_s']:.2f} s ({r['events_per_s']:,.0f}/s, {arrived(r)})",
            lambda o, a: f"{a['elapsed_s'] / o['elapsed_s']:.1f}x faster",
            "all arrive",
            lambda o, a: o["all_arrived"],
        )
        add(
            f"{label}: background threads (peak active_count - 1)",
            o,
            a,
            lambda r: f"{r['threads_background']:,}",
            lambda o, a: f"{a['threads_background'] / o['threads_background']:.0f}x fewer",
            "<= 4 sender threads",
            lambda o, a: o["threads_background"] <= 4,
        )
        add_rss(label, o, a)
    if "fault" in ran:
        o, a = res.get("fault/ours"), res.get("fault/anchor")
        label = f"4. fault mix, n={sizes['fault']:,} (20% 500, 5% 429, 5% drops; Retry-After 1)"
        add(
            f"{label}: events lost",
            o,
            a,
            lambda r: f"{r['lost']:,}" + ("" if r["flushed"] else " (flush timed out)"),
            lambda o, a: "-",
            "nothing lost",
            lambda o, a: o["lost"] == 0 and o["refused"] == 0,
        )
        add(
            f"{label}: events/s, first call to flush done",
            o,
            a,
            lambda r: f"{r['events_per_s']:,.0f} ({r['elapsed_s']:.1f} s)",
            lambda o, a: f"{o['events_per_s'] / a['events_per_s']:.1f}x",
            "-",
            None,
        )
    if "burst" in ran:
        o, a = res.get("burst/ours"), res.get("burst/anchor")
        n = sizes["burst"]
        label = f"5. burst of {n:,} events, default settings"
        add(
            f"{label}: events lost",
            o,
            a,
            lambda r: f"{r['lost']:,} ({r['lost'] / n:.0%})",
            lambda o, a: "-",
            "nothing lost",
            lambda o, a: o["lost"] == 0,
        )
        add_rss(label, o, a)
    if "queued" in ran:
        n = sizes["queued"]
        add(
            f"6. {n:,} events held in memory (endpoint down): peak RSS, MB",
            res.get("queued/ours"),
            res.get("queued/anchor"),
            lambda r: f"{r['rss_peak_mb']:.1f} ({r['kb_per_event']:.1f} KB/event)",
            lambda o, a: rss_ratio(o["rss_peak_mb"], a["rss_peak_mb"]),
            "-",
            None,
        )
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    head = "| scenario | selligent-segment | segment-analytics-python | ratio | target | met? |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        cells = (r["scenario"], r["ours"], r["anchor"], r["ratio"], r["target"], r["met"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("selligent-segment", "segment-analytics-python", "requests", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def problems(res: dict[str, Any], rows: list[dict[str, str]]) -> list[str]:
    """Things a reader must look at: failed runs, library errors, missed targets."""
    out, ok = common_problems(res, rows, ours=("ours",), missed=("NO",))
    for key, r in ok:
        for field in ("close_error", "flush_error", "first_refusal"):
            if r.get(field):
                out.append(f"{key}: {field}:\n{r[field]}")
        if r.get("close_ok") is False:
            out.append(f"{key}: close() returned False after {r.get('close_s')} s")
        if key.startswith("per_call/ours") and r.get("delivered_in_time") is False:
            out.append(f"{key}: flush() did not finish delivering the timed calls")
    return out


def parent_main(args: argparse.Namespace) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    wanted = wanted_scenarios(args, SCENARIOS)
    if wanted is None:
        return 2
    info = machine()
    mode = "quick" if args.quick else "full"
    print(
        f"# selligent-segment vs segment-analytics-python ({mode} run; {info['cpus']} CPUs, "
        f"{info['cpu'] or 'unknown CPU'}, Python {info['python']})",
        flush=True,
    )
    started = time.perf_counter()

    def config(scenario: str, lib: str, url: str) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "lib": lib,
            "url": url,
            "n": sizes.get(scenario, 0),
            "warmup": sizes["warmup"],
            "tenants": sizes["tenants"],
            "per_tenant": sizes["per_tenant"],
        }

    res = run_scenarios(
        wanted, LIBS, FAULTS, CAP, config, lambda scenario: sizes.get(f"{scenario}_rounds", 1)
    )
    if res is None:
        return 2
    total = time.perf_counter() - started
    rows = build_rows(res, sizes)
    print()
    print(markdown(rows))
    print()
    print(f"Total wall time {total:.0f} s.")
    notes = problems(res, rows)
    return finish(args, notes, mode, sizes, FAULTS, info, total, rows, res)


def finish(
    args: argparse.Namespace,
    notes: list[str],
    mode: str,
    sizes: Mapping[str, int],
    faults: Mapping[str, Any],
    info: Mapping[str, Any],
    total: float,
    rows: list[dict[str, str]],
    res: Mapping[str, Any],
    **extra: Any,
) -> int:
    """Print the problems, write the run (``extra`` included) to ``--json``; the exit
    status (``--check``)."""
    payload = {
        "mode": mode,
        "sizes": sizes,
        "faults": faults,
        "machine": info,
        **extra,
        "total_s": round(total, 1),
        "rows": rows,
        "problems": notes,
        "results": {k: v for k, v in res.items() if not k.startswith("_")},
    }
    if notes:
        print("\nProblems:")
        for note in notes:
            print(f"- {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"raw results written to {args.json}")
    if args.check and notes:
        return 1
    return 0


def make_parser(prog: str, description: str, scenarios: Sequence[str]) -> argparse.ArgumentParser:
    """The options every benchmark command shares: --quick, --json, --only, --check."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="FILE", help="write the raw results to FILE")
    parser.add_argument("--only", metavar="LIST", help=f"comma list of {', '.join(scenarios)}")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or a run failed"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "python -m benchmarks.run",
        "selligent-segment vs segment-analytics-python 2.4, side by side.",
        SCENARIOS,
    )
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0  # not reached: the child exits through os._exit
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
