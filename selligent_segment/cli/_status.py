"""``selligent-segment spool status``: the backlog of a spool file per tenant and its
sizes, as a table or as JSON."""

from __future__ import annotations

import argparse

from selligent_segment._errors import SpoolError
from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    Command,
    UsageError,
    add_spool_option,
    err,
    open_spool,
    print_json,
)
from selligent_segment.spool._file import SpoolStatus

__all__ = ["SPOOL"]


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
        with open_spool(args) as spool:
            status = spool.status()
    except (UsageError, SpoolError) as exc:
        err(f"selligent-segment spool status: {exc}")
        return EXIT_USAGE
    if args.json:
        print_json(status.to_dict())
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
