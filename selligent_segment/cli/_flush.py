"""``selligent-segment flush``: deliver every event a spool holds (a file, or a PostgreSQL
schema: every host's rows), then say what is left (per tenant, and why) and how many
dead letters are kept."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import time

from selligent_segment._emitter import Emitter
from selligent_segment._errors import SpoolError
from selligent_segment._naming import EventNaming
from selligent_segment.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    Command,
    UsageError,
    add_delivery_options,
    add_json_option,
    add_spool_option,
    emitter_from_args,
    err,
    exit_status_of,
    interrupts_held,
    open_spool,
    print_json,
    read_status,
)
from selligent_segment.cli._summary import (
    flush_exit_status,
    flush_json,
    flush_summary,
    only_paused_left,
)
from selligent_segment.cli._watch import FailureWatch
from selligent_segment.spool._postgres import is_postgres_url
from selligent_segment.spool._schema import spool_error, spool_path

__all__ = ["FLUSH"]


def _unusable(args: argparse.Namespace, exc: Exception) -> str:
    """What a SpoolError, or an SQLite error that escaped as one, says about the file."""
    if isinstance(exc, sqlite3.Error) and not is_postgres_url(args.spool):
        return str(spool_error(spool_path(args.spool), exc))
    return str(exc)


_FLUSH_EPILOG = """\
Delivers whatever the spool file holds: events left by an earlier `send`, by a stopped
process (replayed from its journal), or requeued dead letters. Tenants whose key is
refused (401/403) or missing are named; their events stay in the file.

--spool may be a PostgreSQL spool (postgresql://...): flush then delivers every host's
rows until the table holds none it can deliver (relays may be delivering at the same
time: rows are leased with SKIP LOCKED, never sent twice by two live processes).

Before anything is sent, SQLite reads every page of the file (`PRAGMA quick_check`):
a damaged file stops the command with one line, before any event is sent.

While delivery fails, a warning per tenant says why (again every 30 s while it lasts);
the summary names each tenant with events left and its last delivery error. --json
prints the summary as one JSON object on stdout: {"delivered": N, "spool": {... as
`spool status --json`}, "exit_status": N}.

exit status:
  0  the spool holds no deliverable event any more (dead letters are reported, not
     counted: see `dead-letters list`)
  2  usage error, or the spool file is missing or unusable: foreign, newer, corrupt, or
     not writable by this user (one line names the file and the reason; the file is
     left untouched)
  3  some events were not delivered (the tenants are named, never their keys)
  130, 143  interrupted (Ctrl-C, SIGTERM): the summary says what is left; re-run to go on
"""


def _configure_flush(parser: argparse.ArgumentParser) -> None:
    add_json_option(parser)
    add_spool_option(parser)
    add_delivery_options(parser)


def _run_flush(args: argparse.Namespace) -> int:
    try:
        open_spool(args).close()  # refuse a missing file: flush never creates one
        emitter = emitter_from_args(args, EventNaming(profile=args.profile), set())
    except UsageError as exc:
        err(f"{PROG} flush: {exc}")
        return EXIT_USAGE
    deadline = time.monotonic() + args.timeout
    watch = FailureWatch()
    held = contextlib.ExitStack()  # Ctrl-C held off from the first one on
    with held:
        return _flush_until_done(args, emitter, deadline, watch, held)


def _flush_until_done(
    args: argparse.Namespace,
    emitter: Emitter,
    deadline: float,
    watch: FailureWatch,
    held: contextlib.ExitStack,
) -> int:
    """Flush until done, out of time, or interrupted; then the summary and its status.
    After a first Ctrl-C (or SIGTERM) further ones are held off (``held``), so that the
    close and the summary are never cut short by a second."""
    done = interrupted = False
    try:
        try:
            while not done and time.monotonic() < deadline:
                done = emitter.flush(min(1.0, max(0.0, deadline - time.monotonic())))
                stats = emitter.stats()
                if not args.quiet:
                    err(*watch.lines(stats, time.monotonic()))
                if only_paused_left(stats):
                    break  # waiting will not help
        except KeyboardInterrupt:
            held.enter_context(interrupts_held())
            interrupted = True
            err(f"{PROG} flush: interrupted; what is left stays in the spool")
        stats = emitter.stats()
    except (SpoolError, sqlite3.Error) as exc:  # the file became unusable meanwhile
        emitter.close(0)
        err(f"{PROG} flush: {_unusable(args, exc)}")
        return EXIT_USAGE
    emitter.close(1.0)
    try:
        status = read_status(args)
    except UsageError as exc:
        err(f"{PROG} flush: {exc}")
        return EXIT_USAGE
    exit_status = EXIT_INTERRUPTED if interrupted else flush_exit_status(status)
    if args.json:
        print_json(flush_json(stats.delivered, status, exit_status_of(args, exit_status)))
    elif not args.quiet or exit_status:
        err(*flush_summary(stats.delivered, status, time.time()))
    return exit_status


FLUSH = Command(
    name="flush",
    help="deliver what a spool holds",
    description="Deliver every event a spool (a file or PostgreSQL) holds, then stop.",
    epilog=_FLUSH_EPILOG,
    configure=_configure_flush,
    run=_run_flush,
)
