"""The operations commands: ``flush``, ``spool status``, ``dead-letters`` and ``demo``."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import orjson

from selligent_segment._errors import SelligentSegmentError, SpoolError, shown
from selligent_segment._naming import EventNaming
from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    Command,
    UsageError,
    add_delivery_options,
    add_spool_option,
    emitter_from_args,
    err,
)
from selligent_segment.spool._file import DeadLetter, SpoolFile, SpoolStatus
from selligent_segment.spool._schema import spool_error, spool_path

__all__ = ["DEAD_LETTERS", "DEMO", "FLUSH", "SPOOL"]


def _json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _open(args: argparse.Namespace) -> SpoolFile:
    try:
        return SpoolFile(args.spool)
    except SpoolError as exc:
        raise UsageError(str(exc)) from None


def _unusable(args: argparse.Namespace, exc: Exception) -> str:
    """What a SpoolError, or an SQLite error that escaped as one, says about the file."""
    if isinstance(exc, sqlite3.Error):
        return str(spool_error(spool_path(args.spool), exc))
    return str(exc)


# -- flush --------------------------------------------------------------------------------

_FLUSH_EPILOG = """\
Delivers whatever the spool file holds: events left by an earlier `send`, by a stopped
process (replayed from its journal), or requeued dead letters. Tenants whose key is
refused (401/403) or missing are named; their events stay in the file.

Before anything is sent, SQLite reads every page of the file (`PRAGMA quick_check`):
a damaged file stops the command with one line, before any event is sent.

exit status:
  0  the spool holds no deliverable event any more (dead letters are reported, not
     counted: see `dead-letters list`)
  2  usage error, or the spool file is missing or unusable: foreign, newer, corrupt, or
     not writable by this user (one line names the file and the reason; the file is
     left untouched)
  3  some events were not delivered (the tenants are named, never their keys)
"""


def _configure_flush(parser: argparse.ArgumentParser) -> None:
    add_spool_option(parser)
    add_delivery_options(parser)


def _run_flush(args: argparse.Namespace) -> int:
    try:
        _open(args).close()  # refuse a missing file: flush never creates one
        emitter = emitter_from_args(args, EventNaming(profile=args.profile), set())
    except UsageError as exc:
        err(f"selligent-segment flush: {exc}")
        return EXIT_USAGE
    deadline = time.monotonic() + args.timeout
    done = False
    try:
        try:
            while not done and time.monotonic() < deadline:
                done = emitter.flush(min(1.0, max(0.0, deadline - time.monotonic())))
                stats = emitter.stats()
                queued = {t for t, s in stats.tenants.items() if s.queued}
                if queued and all(stats.tenants[t].paused for t in queued):
                    break  # only paused tenants are left: waiting will not help
        except KeyboardInterrupt:
            err("selligent-segment flush: interrupted; what is left stays in the spool")
        stats = emitter.stats()
    except (SpoolError, sqlite3.Error) as exc:  # the file became unusable meanwhile
        emitter.close(0)
        err(f"selligent-segment flush: {_unusable(args, exc)}")
        return EXIT_USAGE
    emitter.close(1.0)
    try:
        with _open(args) as spool:
            status = spool.status()
    except (UsageError, SpoolError) as exc:
        err(f"selligent-segment flush: {exc}")
        return EXIT_USAGE
    # Dead letters are kept and listed, but not deliverable: only what is queued counts.
    left = [t for t in status.tenants if t.queued]
    err(f"delivered {stats.delivered} events; {status.queued} left in {status.path}")
    for t in left:
        why = f" ({t.paused})" if t.paused else ""
        err(f"  tenant {shown(t.tenant)}: {t.queued} events not delivered{why}")
    if status.dead_letters:
        err(
            f"{status.dead_letters} dead letters kept; see: selligent-segment dead-letters "
            f"list --spool {status.path}"
        )
    return EXIT_UNDELIVERED if left else EXIT_OK


FLUSH = Command(
    name="flush",
    help="deliver what a spool file holds",
    description="Deliver every event a spool file holds, then stop.",
    epilog=_FLUSH_EPILOG,
    configure=_configure_flush,
    run=_run_flush,
)


# -- spool status --------------------------------------------------------------------------

_SPOOL_EPILOG = """\
status shows, per tenant: events queued (leased ones included), leased (being sent),
dead letters, the age of the oldest queued event, and the state (waiting / paused and
why); then the file size, the journals not yet ingested and the live processes using it.

A file this user may read but not write (a read-only directory or file) is shown too.

exit status:
  0  the status was shown
  2  usage error, or the spool file is missing or unusable (one line names the file and
     the reason: foreign, newer, corrupt, unreadable)
"""


def _configure_spool(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = sub.add_parser("status", help="backlog per tenant and state, sizes")
    add_spool_option(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _print_status(status: SpoolStatus) -> None:
    print(f"spool {status.path}")
    print(
        f"  {status.file_bytes} bytes on disk ({status.journal_bytes} in journals), "
        f"{status.processes} live processes"
    )
    if not status.tenants:
        print("  empty")
        return
    width = max(6, *(len(t.tenant) for t in status.tenants))
    print(f"  {'tenant':<{width}}  {'queued':>8}  {'leased':>7}  {'dead':>6}  {'oldest':>6}  state")
    for t in status.tenants:
        state = f"paused: {t.paused}" if t.paused else ("waiting" if t.queued else "idle")
        print(
            f"  {t.tenant:<{width}}  {t.queued:>8}  {t.leased:>7}  {t.dead_letters:>6}  "
            f"{_age(t.oldest_age):>6}  {state}"
        )


def _run_spool(args: argparse.Namespace) -> int:
    try:
        with _open(args) as spool:
            status = spool.status()
    except (UsageError, SpoolError) as exc:
        err(f"selligent-segment spool status: {exc}")
        return EXIT_USAGE
    if args.json:
        _json(status.to_dict())
    else:
        _print_status(status)
    return EXIT_OK


SPOOL = Command(
    name="spool",
    help="look at a spool file (spool status)",
    description="Look at a spool file: `spool status` shows the backlog per tenant.",
    epilog=_SPOOL_EPILOG,
    configure=_configure_spool,
    run=_run_spool,
)


# -- dead-letters -------------------------------------------------------------------------

_DEAD_EPILOG = """\
Dead letters are messages Segment refused for good (400/413/422: reason 'rejected'),
batches given up after the retry budget ('retries_exhausted'), records too large to
send ('too_large'), and what could not be read back from a journal ('unreadable ...':
a damaged record, or damaged journal bytes kept raw). They stay in the spool file until
requeued or purged. --reason matches the start of the reason, e.g. --reason rejected.
`list` works on a file this user may read but not write; requeue and purge say why not.

  list     print them (oldest first), with --json the whole message bodies too
  requeue  put them back in their tenants' queues, same messageId; running emitters pick
           them up within seconds, or run `selligent-segment flush`
  purge    delete them for good; without a filter, --all is required

exit status:
  0  done (also when nothing matched)
  2  usage error, or the spool file is missing or unusable
"""


def _configure_dead_letters(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("list", "print dead letters"),
        ("requeue", "send dead letters again"),
        ("purge", "delete dead letters"),
    ):
        child = sub.add_parser(action, help=text)
        add_spool_option(child)
        child.add_argument("--tenant", help="only this tenant's")
        child.add_argument("--reason", help="only those whose reason starts with this")
        child.add_argument("--json", action="store_true", help="print JSON for scripts")
        if action == "list":
            child.add_argument("--limit", type=int, help="at most this many")
        else:
            child.add_argument(
                "--id", type=int, action="append", dest="ids", help="only this id (repeatable)"
            )
        if action == "purge":
            child.add_argument("--all", action="store_true", help="purge with no filter")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_letters(letters: Sequence[DeadLetter]) -> None:
    for d in letters:
        status = d.status if d.status is not None else "-"
        print(f"{d.id}\t{d.tenant}\t{d.kind}\t{_when(d.failed_at)}\t{status}\t{d.reason}")
    print(f"{len(letters)} dead letters", file=sys.stderr)


def _run_dead_letters(args: argparse.Namespace) -> int:
    try:
        with _open(args) as spool:
            if args.action == "list":
                letters = spool.dead_letters(
                    tenant=args.tenant, reason=args.reason, limit=args.limit
                )
                if args.json:
                    _json([d.to_dict() for d in letters])
                else:
                    _print_letters(letters)
                return EXIT_OK
            filters = {"tenant": args.tenant, "reason": args.reason, "ids": args.ids}
            if (
                args.action == "purge"
                and not args.all
                and not any(v is not None for v in filters.values())
            ):
                raise UsageError("purge without --tenant, --reason or --id needs --all")
            act = spool.requeue if args.action == "requeue" else spool.purge
            count = act(**filters)
    except (UsageError, SelligentSegmentError) as exc:
        err(f"selligent-segment dead-letters {args.action}: {exc}")
        return EXIT_USAGE
    verb = "requeued" if args.action == "requeue" else "purged"
    if args.json:
        _json({verb: count})
    else:
        print(f"{count} dead letters {verb}")
    return EXIT_OK


DEAD_LETTERS = Command(
    name="dead-letters",
    help="list, requeue or purge dead letters",
    description="List, requeue or purge the dead letters of a spool file.",
    epilog=_DEAD_EPILOG,
    configure=_configure_dead_letters,
    run=_run_dead_letters,
)


# -- demo ---------------------------------------------------------------------------------

_DEMO_EPILOG = """\
Starts a Segment stand-in on loopback (nothing leaves the machine), simulates a campaign
for three tenants across all six events (user ids and email-only recipients), through
the durable spool in a temporary directory, with a 1.5 s outage and two 429s on the way;
ends with a table per tenant and event of emitted vs accepted.

exit status:
  0  every emitted event was accepted exactly once
  1  emitted and accepted differ
"""


def _run_demo(args: argparse.Namespace) -> int:
    from selligent_segment.cli._demo import run_demo

    return run_demo()


DEMO = Command(
    name="demo",
    help="a three-tenant campaign to a local Segment stand-in, verified",
    description="Run a short demonstration; nothing to configure.",
    epilog=_DEMO_EPILOG,
    configure=lambda parser: None,
    run=_run_demo,
)
