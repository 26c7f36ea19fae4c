"""What ``selligent-segment demo`` runs: a campaign for three tenants, through the durable
spool, to an embedded LocalSegment that has an outage and rate-limits one tenant on the way.

Nothing to configure and nothing leaves the machine: the endpoint is on loopback, the
spool lives in a temporary directory removed afterwards. The closing table compares, per
tenant and event, what was emitted with what the endpoint accepted (unique messageIds).
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from selligent_segment._emitter import Emitter
from selligent_segment._naming import EventNaming
from selligent_segment._record import EventKind
from selligent_segment.cli._progress import Progress
from selligent_segment.cli._summary import demo_table, retry_summary
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.testing import Fault, FaultPlan, LocalSegment

__all__ = ["run_demo"]

#: tenant -> recipients in its campaign
TENANTS = {"acme": 600, "globex": 350, "initech": 150}
OUTAGE_SECONDS = 1.5
_NAMING = EventNaming()  # the demo's emitter uses the default profile
EVENT_NAMES = tuple(_NAMING.name(kind) for kind in EventKind)


def campaign(tenant: str, recipients: int, seed: int = 7) -> list[dict[str, Any]]:
    """The callbacks of one simulated campaign: every recipient is delivered or bounced;
    some open, click, unsubscribe or complain. Every other recipient has a user id."""
    rng = random.Random(f"{seed}:{tenant}")  # noqa: S311 - a simulation, not a secret
    records: list[dict[str, Any]] = []
    for i in range(recipients):
        base: dict[str, Any] = {
            "tenant": tenant,
            "email": f"person{i}@{tenant}.example",
            "email_id": f"{tenant}-mail-{i}",
            "campaign_id": f"{tenant}-c1",
        }
        if i % 2 == 0:
            base["user_id"] = f"{tenant}-u{i}"
        events: list[tuple[str, dict[str, Any]]] = []
        if rng.random() < 0.04:
            events.append(("bounced", {"bounce_type": "hard", "smtp_status": "5.1.1"}))
        else:
            events.append(("delivered", {"email_subject": "Winter sale"}))
            if rng.random() < 0.5:
                events.append(("opened", {}))
                if rng.random() < 0.4:
                    events.append(("link_clicked", {"link_url": f"https://{tenant}.example/sale"}))
            if rng.random() < 0.03:
                events.append(("unsubscribed", {"list_id": "news"}))
            if rng.random() < 0.01:
                events.append(("marked_as_spam", {}))
        for kind, extra in events:
            records.append({"type": kind, "event_id": f"{tenant}-{i}-{kind}", **base, **extra})
    rng.shuffle(records)
    return records


def run_demo(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the demo; 0 when every emitted event was accepted exactly once, else 1."""
    keys = {tenant: f"demo-key-{tenant}" for tenant in TENANTS}
    # globex is rate-limited twice (429, Retry-After 1 s) once the outage is over.
    limited = (Fault.http(429, retry_after=1),) * 2
    plan = FaultPlan(per_key={keys["globex"]: limited})
    records = {tenant: campaign(tenant, n) for tenant, n in TENANTS.items()}
    total = sum(len(r) for r in records.values())
    progress = Progress(err)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="selligent-demo-") as tmp,
        LocalSegment(write_keys=keys.values(), faults=None) as server,
    ):
        spool = Path(tmp) / "spool.db"
        print(f"LocalSegment listening on {server.url}; spool {spool}", file=err)
        print(f"outage: every request fails with 503 for {OUTAGE_SECONDS} s", file=err)
        server.outage(503)
        timer = threading.Timer(OUTAGE_SECONDS, _end_outage, (server, plan, err))
        timer.start()
        emitter = Emitter(
            write_keys=keys,
            endpoint=server.url,
            spool=spool,
            batch=BatchPolicy(linger=0.05),
            retry=RetryPolicy(initial_backoff=0.25, max_backoff=1.0),
        )
        emitted = _emit_all(emitter, records, progress, total)
        done = False
        while not done and time.monotonic() - started < 25:
            done = emitter.flush(0.2)
            progress.show("delivering", server.accepted_count, total, _detail(server, total))
        emitter.close(5)
        timer.cancel()
        progress.close()
        stats = emitter.stats()
        print(
            f"{retry_summary(stats)} through the outage and the rate limit; "
            f"{server.duplicates} duplicates dropped by the endpoint",
            file=err,
        )
        accepted = _accepted(server, keys)
    elapsed = time.monotonic() - started
    return _report(out, err, emitted, accepted, elapsed)


def _end_outage(server: LocalSegment, plan: FaultPlan, err: TextIO) -> None:
    server.set_faults(plan)
    server.end_outage()
    print("outage over; globex is now rate-limited twice (429, Retry-After 1 s)", file=err)


def _emit_all(
    emitter: Emitter, records: dict[str, list[dict[str, Any]]], progress: Progress, total: int
) -> Counter[tuple[str, str]]:
    emitted: Counter[tuple[str, str]] = Counter()
    queues = {tenant: list(rs) for tenant, rs in records.items()}
    done = 0
    while any(queues.values()):
        for tenant, queue in queues.items():  # the tenants' hooks fire interleaved
            for record in queue[:50]:
                emitter.emit(record)
                emitted[tenant, _NAMING.name(EventKind(record["type"]))] += 1
            done += len(queue[:50])
            del queue[:50]
        if progress.due():
            progress.show("emitting", done, total, f"{done}/{total} events accepted")
    return emitted


def _detail(server: LocalSegment, total: int) -> str:
    return f"{server.accepted_count}/{total} events at the endpoint"


def _accepted(server: LocalSegment, keys: dict[str, str]) -> Counter[tuple[str, str]]:
    accepted: Counter[tuple[str, str]] = Counter()
    for tenant, key in keys.items():
        for event in server.events(key):
            accepted[tenant, event["event"]] += 1
    return accepted


def _report(
    out: TextIO,
    err: TextIO,
    emitted: Counter[tuple[str, str]],
    accepted: Counter[tuple[str, str]],
    elapsed: float,
) -> int:
    table, ok = demo_table(tuple(TENANTS), EVENT_NAMES, emitted, accepted)
    for line in table:
        print(line, file=out)
    if ok:
        print(
            f"verified: every emitted event was accepted exactly once ({elapsed:.1f} s)",
            file=err,
        )
        return 0
    print("MISMATCH: emitted and accepted differ (see the table)", file=err)
    return 1
