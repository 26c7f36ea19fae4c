"""``selligent-segment spool status|init``: the backlog of a spool (a file or a PostgreSQL
schema) per tenant and its sizes, as a table or as JSON; creating or migrating one."""

from __future__ import annotations

import argparse
import time

from selligent_segment._errors import ConfigurationError, SpoolError
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
from selligent_segment.spool._view import init_spool

__all__ = ["SPOOL"]


_SPOOL_EPILOG = """\
--spool is a spool file or a PostgreSQL spool, postgresql://user@host:port/db (password
from PGPASSWORD or ~/.pgpass, never shown; ?spool_schema=NAME for another schema).

  status  per tenant: events queued (leased ones included), leased (being sent), dead
          letters, the age of the oldest queued event, and the state (waiting / paused
          and why); then the size (file and journals, or the schema's tables) and the
          live processes using it (with PostgreSQL: emitters and relays on every host;
          with a file: those holding their owner lock, so a process killed with kill -9
          does not count); then, for each tenant that had one, the last delivery error
          any process using the spool met, and how long ago (--json: "last_error":
          {"text", "at" (Unix time), "status"} or null). A file this user may read but
          not write is shown too.
  init    create the spool (a PostgreSQL schema, its tables and its SQL function
          enqueue(tenant, message), or a spool file), or migrate an older one to this
          release's version; one written by a newer release is refused and left as is.

exit status:
  0  the status was shown, or the spool is ready
  2  usage error, or the spool is missing or unusable (one line names it and the
     reason: foreign, newer, corrupt, unreadable, the database refused)
"""


def _configure_spool(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = sub.add_parser("status", help="backlog per tenant and state, sizes")
    add_spool_option(status)
    add_json_option(status)
    init = sub.add_parser("init", help="create a spool, or migrate it to this version")
    add_spool_option(init)


def _run_init(args: argparse.Namespace) -> int:
    try:
        done = init_spool(args.spool)
    except (ConfigurationError, SpoolError) as exc:
        err(f"{PROG} spool init: {exc}")
        return EXIT_USAGE
    out(done)
    return EXIT_OK


def _run_spool(args: argparse.Namespace) -> int:
    if args.action == "init":
        return _run_init(args)
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
    help="look at a spool, or create it (spool status|init)",
    description="Look at a spool (a file or PostgreSQL): `spool status` shows the backlog "
    "per tenant; `spool init` creates or migrates it.",
    epilog=_SPOOL_EPILOG,
    configure=_configure_spool,
    run=_run_spool,
)
