"""``selligent-segment spool status``: the backlog of a spool file per tenant and its
sizes, as a table or as JSON."""

from __future__ import annotations

import argparse
import time

from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    UsageError,
    add_json_option,
    add_spool_option,
    err,
    out,
    print_json,
    read_status,
)
from selligent_segment.cli._summary import spool_status_table

__all__ = ["SPOOL"]


_SPOOL_EPILOG = """\
status shows, per tenant: events queued (leased ones included), leased (being sent),
dead letters, the age of the oldest queued event, and the state (waiting / paused and
why); then the file size, the journals not yet ingested and the live processes using it
(those holding their owner lock: a process killed with kill -9 does not count); then,
for each tenant that had one, the last delivery error any process using the file met,
and how long ago (--json: "last_error": {"text", "at" (Unix time), "status"} or null).

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
    add_json_option(status)


def _run_spool(args: argparse.Namespace) -> int:
    try:
        status = read_status(args)
    except UsageError as exc:
        err(f"{PROG} spool status: {exc}")
        return EXIT_USAGE
    if args.json:
        print_json(status.to_dict())
    else:
        out(*spool_status_table(status, time.time()))
    return EXIT_OK


SPOOL = Command(
    name="spool",
    help="look at a spool file (spool status)",
    description="Look at a spool file: `spool status` shows the backlog per tenant.",
    epilog=_SPOOL_EPILOG,
    configure=_configure_spool,
    run=_run_spool,
)
