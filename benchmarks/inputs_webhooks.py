"""Benchmark the ESP webhook adapters: events per second through SendGrid's signed event
webhook (batches of 1,000 events, each request's ECDSA signature checked) into an Emitter.

Usage (from the repository root)::

    python -m benchmarks.inputs_webhooks [--quick] [--batches N] [--durable] [--json FILE]

One process: a ``LocalSegment`` on loopback and one Emitter (memory spool, or a SQLite
spool file in a temporary directory with ``--durable``). Stages, each timed over the same
prebuilt signed requests (a mix of delivered, open, click, bounce events; 1,000 per
request):

1. ``parse``: ``PARSERS["sendgrid"](body)``, no signature check;
2. ``verify+parse``: ``SendGridWebhook.handle(body, headers)``, the signature checked;
3. ``handle+emit_many``: the same, then ``emitter.emit_many(records)`` (accepted);
4. ``http``: the ASGI route (``webhooks_app``) over loopback HTTP, one request at a time,
   answered only once the records are accepted;
5. ``delivered``: events/s of stage 4 until every message is at the LocalSegment.

Prints one markdown table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import platform
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from selligent_segment import BatchPolicy, Emitter
from selligent_segment.inputs.esp import PARSERS, SendGridConfig, SendGridWebhook, webhooks_app
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._asgi_server import serve_asgi

BATCH = 1_000
_KINDS = ("delivered", "open", "click", "bounce")


def _requests(count: int, key: ec.EllipticCurvePrivateKey) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    now = int(time.time())
    for b in range(count):
        events: list[dict[str, Any]] = []
        for i in range(BATCH):
            n = b * BATCH + i
            kind = _KINDS[n % len(_KINDS)]
            event: dict[str, Any] = {
                "email": f"user{n}@example.com",
                "timestamp": now - 60,
                "event": kind,
                "sg_event_id": f"sg-{n}",
                "sg_message_id": f"msg-{n // 4}.filter",
                "tenant": f"tenant-{n % 10}",
                "email_id": f"e-{n // 100}",
                "ip": "203.0.113.7",
                "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            }
            if kind == "click":
                event["url"] = f"https://example.com/p/{n}"
            if kind == "bounce":
                event.update(type="bounce", reason="550 5.1.1 unknown user", status="5.1.1")
            events.append(event)
        body = orjson.dumps(events)
        stamp = str(now)
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        out.append(
            (
                body,
                {
                    "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
                    "x-twilio-email-event-webhook-timestamp": stamp,
                },
            )
        )
    return out


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/sendgrid", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Run the stages; exit status 1 when an event was lost or refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 batches instead of 50")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--durable", action="store_true", help="a SQLite spool file")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    batches = args.batches or (5 if args.quick else 50)
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    requests = _requests(batches, key)
    total = batches * BATCH
    webhook = SendGridWebhook(SendGridConfig(public))
    figures: dict[str, Any] = {"events": total, "batch": BATCH, "durable": args.durable}

    start = time.perf_counter()
    for body, _ in requests:
        PARSERS["sendgrid"](body, "bench")
    figures["parse"] = total / (time.perf_counter() - start)

    start = time.perf_counter()
    for body, headers in requests:
        webhook.handle(body, headers)
    figures["verify+parse"] = total / (time.perf_counter() - start)

    keys = {f"tenant-{t}": f"key-{t}" for t in range(10)}
    with tempfile.TemporaryDirectory() as tmp, LocalSegment() as server:
        spool = str(Path(tmp) / "spool.db") if args.durable else "memory"
        options: dict[str, Any] = {"write_keys": keys, "spool": spool, "on_full": "block"}
        emitter = Emitter(endpoint=server.url, batch=BatchPolicy(linger=0.05), **options)
        try:
            start = time.perf_counter()
            accepted = 0
            for body, headers in requests:
                accepted += emitter.emit_many(webhook.handle(body, headers).records).accepted
            figures["handle+emit_many"] = total / (time.perf_counter() - start)
            emitter.flush(120)
            server.clear()
            app = webhooks_app(emitter, {"sendgrid": webhook})
            with serve_asgi(app) as url:
                start = time.perf_counter()
                statuses = [_post(url, body, headers) for body, headers in requests]
                figures["http"] = total / (time.perf_counter() - start)
                emitter.flush(120)
                figures["delivered"] = total / (time.perf_counter() - start)
            figures["arrived"] = server.accepted_count
            figures["non_200"] = sum(s != 200 for s in statuses)
        finally:
            emitter.close(30)
    rows = [
        ("parse only (PARSERS)", figures["parse"]),
        ("signature checked + parse (handle)", figures["verify+parse"]),
        ("handle + emit_many", figures["handle+emit_many"]),
        ("ASGI route over loopback HTTP, answered", figures["http"]),
        ("ASGI route, until all delivered to LocalSegment", figures["delivered"]),
    ]
    print(
        f"SendGrid webhook, {batches} requests x {BATCH:,} events, "
        f"{'SQLite spool' if args.durable else 'memory spool'}, "
        f"CPython {platform.python_version()}"
    )
    print("| stage | events/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    print(f"arrived {figures['arrived']:,} of {total:,}; non-200 answers {figures['non_200']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["arrived"] == total and figures["non_200"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
