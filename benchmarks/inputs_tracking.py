"""Benchmark the tracking endpoints and profile updates.

Usage (from the repository root)::

    python -m benchmarks.inputs_tracking [--hits N] [--repeat R] [--json FILE]

Scenarios, each over N items (default 5,000):

1. ``links``: ``TrackingLinks.click_url`` (validate, seal, sign): links per second.
2. ``unseal``: opening and verifying those tokens: tokens per second.
3. ``pixel``: open-pixel hits through the ASGI app called in-process (no socket), each
   handed to an Emitter (memory spool, a ``MockTransport`` answering 200) until ``flush``
   returns: hits per second end to end (the app's worker-thread hop included).
4. ``profile_decision``: ``ProfileUpdates.update_for`` of delivered records, what
   ``emit`` adds to the common path when profile updates are on (with them off it adds one
   ``is None`` test). Measured alone: ``emit`` throughput on a small host varies by more
   than this cost between runs (its encoder and sender threads share the CPUs).

The median of R repetitions (default 3) is printed as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selligent_segment import Emitter, ProfileUpdates
from selligent_segment._record import normalize
from selligent_segment.inputs.tracking import TrackingApp, TrackingKeys, TrackingLinks
from selligent_segment.inputs.tracking._token import unseal
from selligent_segment.testing import MockResponse, MockTransport

KEYS = TrackingKeys({"k1": b"b" * 32}, "k1")
LINKS = TrackingLinks("https://t.example.com/track", KEYS)
SENT = int(time.time()) - 3600


def _emitter() -> Emitter:
    transport = MockTransport(lambda request: MockResponse(200))
    return Emitter(write_keys={"acme": "k"}, transport=transport, handle_sigterm=False)


def _links(n: int) -> list[str]:
    return [
        LINKS.click_url(
            f"https://shop.example/p/{i}", tenant="acme", email=f"u{i}@example.com", sent_at=SENT
        )
        for i in range(n)
    ]


def bench_links(n: int) -> float:
    start = time.perf_counter()
    _links(n)
    return n / (time.perf_counter() - start)


def bench_unseal(n: int) -> float:
    tokens = [url.rpartition("/")[2] for url in _links(n)]
    now = time.time()
    start = time.perf_counter()
    for token in tokens:
        unseal(token, KEYS, now=now, max_age=None)
    return n / (time.perf_counter() - start)


async def _hit(app: TrackingApp, path: str) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")],
        "client": ("203.0.113.9", 50000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    await app(scope, receive, send)


def bench_pixel(n: int) -> float:
    paths = [
        "/track/o/"
        + LINKS.open_pixel_url(tenant="acme", email=f"u{i}@example.com", sent_at=SENT).rpartition(
            "/"
        )[2]
        for i in range(n)
    ]
    with _emitter() as emitter:
        app = TrackingApp(emitter, KEYS)

        async def run() -> None:
            for start in range(0, n, 64):  # 64 requests in flight, as a server would have
                await asyncio.gather(*(_hit(app, p) for p in paths[start : start + 64]))

        begin = time.perf_counter()
        asyncio.run(run())
        assert emitter.flush(60)
        return n / (time.perf_counter() - begin)


def bench_profile_decision(n: int) -> float:
    policy = ProfileUpdates()
    fields = [
        normalize({"type": "delivered", "email": "a@b.co", "event_id": str(i)}) for i in range(n)
    ]
    start = time.perf_counter()
    for _ in range(20):
        for record in fields:
            policy.update_for(record)
    return 20 * n / (time.perf_counter() - start)


SCENARIOS: dict[str, Callable[[int], float]] = {
    "links": bench_links,
    "unseal": bench_unseal,
    "pixel": bench_pixel,
    "profile_decision": bench_profile_decision,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for name, run in SCENARIOS.items():
        results[name] = statistics.median(run(args.hits) for _ in range(args.repeat))
    print("| scenario | per second |\n| --- | ---: |")
    for name, rate in results.items():
        print(f"| `{name}` | {rate:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
