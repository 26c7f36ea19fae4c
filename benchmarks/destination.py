"""Benchmark Selligent's Segment destination: the receiver and the loader.

Usage (from the repository root; needs the ``server`` and ``bench`` extras)::

    python -m benchmarks.destination [--quick] [--json FILE]

Three processes, as in production: ``selligent-segment destination serve`` (the receiver
and the loader, one process), ``python -m selligent_segment.testing --selligent`` (the
Selligent stand-in), and this one (the client posting signed batches as Segment's Webhooks
destination does). Two tenants (``examples/destination.toml``: acme with the seed schemas,
globex with its own), half identify and half track events; every batch is 1,000 events,
signed on its first element (Segment's batching form), posted by two client threads.

1. ``accept``: events/s the receiver answers 200 (every event journaled) while Selligent
   is down (503 with ``X-RateLimit``-free answers), so only acceptance is measured.
2. ``load``: Selligent comes back; rows/s from the first row stored (the tenants' backoff
   after the outage is reported apart) until the stand-in holds every row (its
   ``/_stats``, polled); the loader runs with ``--batch-size 2000`` (one identify and one
   track ``data/load`` of up to 1,000 rows per turn) under the default cap of 2,500
   requests per minute per API key.
3. ``p99``: answer times of 1,000-event batches posted one after another while (2) runs.
4. The anchor: segment-analytics-python 2.4 posting the same events (``identify`` /
   ``track``, default settings) to a LocalSegment process: events/s until all arrived.

Targets: accept >= 20,000 events/s, load >= 50,000 rows/s, p99 < 1 s. The machine is
shared: runs are short; read a single run as an indication.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import urllib3

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "destination.toml"
ENV = {
    "ACME_SELLIGENT_API_KEY": "acme-key:acme-secret",
    "ACME_SEGMENT_SHARED_SECRET": "acme-shared",
    "GLOBEX_SELLIGENT_API_KEY": "globex-key:globex-secret",
    "GLOBEX_SEGMENT_SHARED_SECRET": "globex-shared",
}
SECRETS = {"acme": "acme-shared", "globex": "globex-shared"}
FULL = {"batches": 60, "latency_batches": 20}
QUICK = {"batches": 16, "latency_batches": 8}
BATCH = 1000


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        raw = answer.read()
    return json.loads(raw) if raw else None


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``cmd``; its first stdout line is ``LISTENING URL``."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"{cmd[:4]} did not start: {line!r}")
    return proc, line.split()[1].rstrip("/")


def spawn_selligent() -> tuple[subprocess.Popen[bytes], str]:
    """The Selligent stand-in in a process of its own, keeping only each row's key."""
    return spawn(
        [
            sys.executable,
            "-m",
            "selligent_segment.testing",
            "--selligent",
            "--port",
            "0",
            "--store-keys-only",
        ]
    )


def write_config(path: Path, selligent_url: str) -> Path:
    """Write the example destination config, its ``selligent_url`` set, to ``path``."""
    text = re.sub(
        r'selligent_url = "[^"]*"', f'selligent_url = "{selligent_url}"', EXAMPLE.read_text()
    )
    path.write_text(text)
    return path


def events(tenant: str, start: int, n: int) -> list[dict[str, Any]]:
    """``n`` events of ``tenant``: identify and track alternately, realistic sizes."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        user = f"{tenant}-user-{i // 2}"
        email = f"{tenant}.user{i // 2}@example.com"
        common = {
            "messageId": f"{tenant}-{i:09d}",
            "userId": user,
            "anonymousId": f"anon-{i // 2}",
            "timestamp": "2026-11-30T09:15:00.000Z",
            "sentAt": "2026-11-30T09:15:01.000Z",
            "context": {
                "ip": "203.0.113.7",
                "library": {"name": "analytics.js", "version": "5"},
                "traits": {"email": email},
            },
        }
        if i % 2 == 0:
            out.append(
                {
                    "type": "identify",
                    **common,
                    "traits": {
                        "email": email,
                        "firstName": "Ada",
                        "lastName": f"L{i}",
                        "address": {"city": "Lyon", "postalCode": "69001", "country": "FR"},
                    },
                }
            )
        else:
            out.append(
                {
                    "type": "track",
                    **common,
                    "event": "Order Completed",
                    "properties": {"total": 42.5, "plan_name": "Pro", "channel": "web"},
                }
            )
    return out


def signed(tenant: str, batch: list[dict[str, Any]]) -> tuple[bytes, str]:
    body = orjson.dumps(batch)
    first = orjson.dumps(batch[0])
    return body, hmac.new(SECRETS[tenant].encode(), first, hashlib.sha1).hexdigest()


def post_all(url: str, batches: list[tuple[str, bytes, str]], threads: int = 2) -> list[float]:
    """Post every batch (two client threads); the answer time of each (all must be 200)."""
    http = urllib3.PoolManager(maxsize=threads, retries=False, timeout=30.0)
    times: list[float] = []
    lock = threading.Lock()
    queue = list(batches)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                tenant, body, signature = queue.pop(0)
            started = time.perf_counter()
            answer = http.request(
                "POST",
                f"{url}/segment/{tenant}",
                body=body,
                headers={"Content-Type": "application/json", "X-Signature": signature},
            )
            elapsed = time.perf_counter() - started
            if answer.status != 200:
                raise RuntimeError(f"answer {answer.status}: {answer.data[:200]!r}")
            with lock:
                times.append(elapsed)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return times


def rows_held(url: str) -> int:
    return int(http_json("GET", url + "/_stats")["rows"])


def anchor(n_events: int) -> dict[str, Any]:
    """segment-analytics-python posting the same events to a LocalSegment process."""
    from segment.analytics import Client

    proc, url = spawn([sys.executable, "-m", "selligent_segment.testing", "--port", "0"])
    try:
        evs = events("acme", 0, n_events)
        client = Client("bench-write-key", host=url, sync_mode=False, max_queue_size=n_events)
        started = time.perf_counter()
        for e in evs:
            if e["type"] == "identify":
                client.identify(
                    e["userId"], e["traits"], context=e["context"], message_id=e["messageId"]
                )
            else:
                client.track(
                    e["userId"],
                    e["event"],
                    e["properties"],
                    context=e["context"],
                    message_id=e["messageId"],
                )
        client.flush()
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            if http_json("GET", url + "/_stats")["unique_message_ids"] >= n_events:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        arrived = http_json("GET", url + "/_stats")["unique_message_ids"]
        client.shutdown()
        return {
            "events": n_events,
            "arrived": arrived,
            "seconds": elapsed,
            "events_per_s": arrived / elapsed,
        }
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--serve-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra option for destination serve (repeatable), e.g. --serve-option=--threads=2",
    )
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    env = {**os.environ, **ENV}
    results: dict[str, Any] = {"size": size}
    selligent, s_url = spawn_selligent()
    tmp = tempfile.TemporaryDirectory(prefix="destination-bench-")
    served = None
    try:
        config = write_config(Path(tmp.name) / "destination.toml", s_url)
        served, r_url = spawn(
            [
                sys.executable,
                "-m",
                "selligent_segment",
                "destination",
                "serve",
                "--config",
                str(config),
                "--spool",
                str(Path(tmp.name) / "spool"),
                "--port",
                "0",
                "--batch-size",
                "2000",
                "--linger",
                "0.05",
            ],
            env,
        )
        n = size["batches"]
        batches = []
        for k in range(n):
            tenant = "acme" if k % 2 == 0 else "globex"
            batch = events(tenant, (k // 2) * BATCH, BATCH)
            # globex loads three events only: its tracks are Order Completed, so all load.
            batches.append((tenant, *signed(tenant, batch)))
        # 1. acceptance alone: Selligent down.
        http_json("POST", s_url + "/_faults", {"outage": 503})
        post_all(r_url, batches[:2])  # warm-up
        started = time.perf_counter()
        times = post_all(r_url, batches[2:])
        accept_s = time.perf_counter() - started
        results["accept"] = {
            "events": (n - 2) * BATCH,
            "seconds": accept_s,
            "events_per_s": (n - 2) * BATCH / accept_s,
        }
        # 2. loading: Selligent back; 3. answer times meanwhile.
        expected = n * BATCH  # one row per event: each identify is a new user
        http_json("POST", s_url + "/_faults", {})
        started = time.perf_counter()
        extra = [
            (t, *signed(t, events(t, 10_000_000 + k * BATCH, BATCH)))
            for k, t in enumerate(["acme", "globex"] * (size["latency_batches"] // 2))
        ]
        latencies: list[float] = []
        poster = threading.Thread(target=lambda: latencies.extend(post_all(r_url, extra, 1)))
        poster.start()
        total = expected + len(extra) * BATCH
        deadline = time.perf_counter() + 300
        # The loads refused during the outage left each tenant in backoff (up to a few
        # seconds): the rate is timed from the first row stored, the wait reported apart.
        while rows_held(s_url) == 0 and time.perf_counter() < deadline:
            time.sleep(0.005)
        first_row = time.perf_counter()
        while rows_held(s_url) < total and time.perf_counter() < deadline:
            time.sleep(0.02)
        load_s = time.perf_counter() - first_row
        results["backoff_after_outage_s"] = first_row - started
        poster.join()
        held = rows_held(s_url)
        results["load"] = {
            "rows": held,
            "expected": total,
            "seconds": load_s,
            "rows_per_s": held / load_s,
        }
        latencies.sort()
        results["p99"] = {
            "batches": len(latencies),
            "p50_s": statistics.median(latencies),
            "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "accept_p99_s": sorted(times)[int(len(times) * 0.99) - 1],
        }
    finally:
        if served is not None:
            served.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                served.wait(30)
        selligent.kill()
        selligent.wait()
        tmp.cleanup()
    results["anchor"] = anchor(min(20_000, size["batches"] * BATCH))
    a, ld, p, k = results["accept"], results["load"], results["p99"], results["anchor"]
    print("| measure | selligent-segment destination | segment-analytics-python 2.4 | target |")
    print("|---|---|---|---|")
    print(
        f"| signed 1,000-event batches accepted (events/s) | {a['events_per_s']:,.0f} | "
        f"{k['events_per_s']:,.0f} (posting the same events to Segment) | >= 20,000 |"
    )
    print(
        f"| rows loaded into LocalSelligent (rows/s) | {ld['rows_per_s']:,.0f} "
        f"({ld['rows']:,} of {ld['expected']:,}) | n/a | >= 50,000 |"
    )
    print(
        f"| answer time of a 1,000-event batch while loading | p50 {p['p50_s'] * 1e3:.0f} ms, "
        f"p99 {p['p99_s'] * 1e3:.0f} ms | n/a | p99 < 1 s |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
