"""``selligent-segment relay``: a long-running, delivery-only process for a PostgreSQL
spool. Any number of relays, on any hosts, deliver what every process emitted into the
shared table (and what non-Python services inserted through the outbox); each reports its
throughput and the backlog every ``--interval`` seconds, stops gracefully on SIGTERM or
Ctrl-C (its leases go back to the table), and exits non-zero only on a configuration error.
"""

from __future__ import annotations

import argparse
import threading
import time

from selligent_segment._naming import EventNaming
from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    UsageError,
    add_delivery_options,
    emitter_from_args,
    err,
)
from selligent_segment.delivery._stats import Stats
from selligent_segment.spool._postgres import is_postgres_url, redact

__all__ = ["RELAY", "relay_line"]

_EPILOG = """\
Delivers, until stopped, every event in a PostgreSQL spool: what any process on any host
emitted into it, and what the platform's own transactions inserted (the outbox). Run as
many relays as you like, on any hosts: each leases batches with SKIP LOCKED, and a relay
that dies has its leases taken over once they expire (those batches are sent again with
the same messageId; Segment dedups them).

Every --interval seconds it prints one line on stderr: events delivered since the last
line and per second, the backlog (all hosts' rows), the tenants paused.

exit status:
  0  stopped by SIGTERM or Ctrl-C (its leases are given back)
  2  usage error: not a postgresql:// spool, no write keys, the database refused the
     connection or the schema at start
"""


def relay_line(delivered: int, seconds: float, backlog: int, paused: dict[str, str]) -> str:
    """The periodic status line (pure, for tests)."""
    rate = delivered / seconds if seconds > 0 else 0.0
    line = (
        f"{PROG} relay: {delivered:,} delivered in {seconds:.0f} s ({rate:,.0f}/s); "
        f"backlog {backlog:,}"
    )
    if paused:
        line += "; paused: " + ", ".join(f"{t} ({r})" for t, r in sorted(paused.items()))
    return line


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool",
        metavar="URL",
        required=True,
        help="the PostgreSQL spool, postgresql://user@host:port/db (password: PGPASSWORD "
        "or ~/.pgpass; options: ?lease_seconds=60&spool_schema=selligent_segment)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between two status lines (default: 60)",
    )
    add_delivery_options(parser)


def _run(args: argparse.Namespace) -> int:
    if not is_postgres_url(args.spool):
        err(f"{PROG} relay: --spool: expected a postgresql:// URL (a spool file has `flush`)")
        return EXIT_USAGE
    if not 0 < args.interval <= threading.TIMEOUT_MAX:  # NaN fails both
        err(f"{PROG} relay: --interval: must be above 0 and at most {threading.TIMEOUT_MAX:g}")
        return EXIT_USAGE
    try:
        emitter = emitter_from_args(args, EventNaming(profile=args.profile), set())
    except UsageError as exc:
        err(f"{PROG} relay: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C while starting: it has taken nothing
        err(f"{PROG} relay: stopped before it started")
        return EXIT_OK
    try:
        err(f"{PROG} relay: delivering from {redact(args.spool)}; stop with SIGTERM or Ctrl-C")
        stopped = threading.Event()
        last = emitter.stats().delivered
        since = time.monotonic()
        while not stopped.wait(args.interval):  # only a signal ends the wait early
            stats = emitter.stats()
            now = time.monotonic()
            err(relay_line(stats.delivered - last, now - since, stats.queued, _paused(stats)))
            last, since = stats.delivered, now
    except KeyboardInterrupt:  # SIGTERM arrives as one too (cli/_main.py)
        pass
    emitter.close(timeout=5.0)
    stats = emitter.stats()
    err(f"{PROG} relay: stopped; {stats.delivered:,} delivered in all")
    return EXIT_OK


def _paused(stats: Stats) -> dict[str, str]:
    return {t: s.paused for t, s in stats.tenants.items() if s.paused is not None}


RELAY = Command(
    name="relay",
    help="deliver from a PostgreSQL spool until stopped",
    description="Deliver, until stopped, every event in a PostgreSQL spool shared by many hosts.",
    epilog=_EPILOG,
    configure=_configure,
    run=_run,
    sigterm_is_stop=True,
)
