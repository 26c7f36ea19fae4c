"""``selligent-segment flush``: deliver every event a spool file holds, then say what is
left (per tenant, and why) and how many dead letters are kept."""

from __future__ import annotations

import argparse
import sqlite3
import time

from selligent_segment._errors import SpoolError, shown
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
    open_spool,
)
from selligent_segment.spool._schema import spool_error, spool_path

__all__ = ["FLUSH"]


def _unusable(args: argparse.Namespace, exc: Exception) -> str:
    """What a SpoolError, or an SQLite error that escaped as one, says about the file."""
    if isinstance(exc, sqlite3.Error):
        return str(spool_error(spool_path(args.spool), exc))
    return str(exc)


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
        open_spool(args).close()  # refuse a missing file: flush never creates one
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
        with open_spool(args) as spool:
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
