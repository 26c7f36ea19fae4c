"""What every ``selligent-segment`` command shares: the Command record, exit statuses,
usage errors, the shared options (delivery, ``--spool``, ``--json``) with the Emitter and
the spool file they describe, and printing (lines on stderr or stdout, JSON)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import attrs
import orjson

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError, SpoolError
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment.spool._file import SpoolFile, SpoolStatus
from selligent_segment.spool._postgres import is_postgres_url, redact
from selligent_segment.spool._schema import default_spool_path, spool_path
from selligent_segment.spool._view import SpoolView, open_view

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNDELIVERED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM

PROG = "selligent-segment"


# -- the command registry ---------------------------------------------------------------


@attrs.frozen
class Command:
    """One subcommand: ``configure`` adds its arguments, ``run`` returns the exit status."""

    name: str
    help: str
    description: str
    epilog: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: True for a long-running service (``relay``), which SIGTERM stops normally: its
    #: exit status is then the command's own (0), not 143.
    sigterm_is_stop: bool = False


def err(*lines: str) -> None:
    """Print each line on stderr (where every message of the commands goes)."""
    for line in lines:
        print(line, file=sys.stderr)


def out(*lines: str) -> None:
    """Print each line on stdout (the output scripts read)."""
    for line in lines:
        print(line)


class UsageError(Exception):
    """A usage problem found after parsing (a missing key, an unreadable option file)."""


def add_delivery_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that delivers: keys, endpoint, timeout, profile."""
    parser.add_argument(
        "--write-key",
        metavar="KEY",
        help="one write key for every record (default: $SEGMENT_WRITE_KEY)",
    )
    parser.add_argument(
        "--write-keys",
        metavar="FILE.json",
        help='a JSON object {"tenant": "key"}: each record goes to its tenant\'s workspace',
    )
    parser.add_argument("--endpoint", metavar="URL", help="a custom endpoint (e.g. a proxy)")
    parser.add_argument("--region", choices=["us", "eu"], default="us", help="(default: us)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for delivery before giving up (default: 300)",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="selligent",
        help="event-name profile (default: selligent)",
    )


def _load_write_keys(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as stream:
            data = orjson.loads(stream.read())
    except OSError as exc:
        raise UsageError(f"--write-keys {path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--write-keys {path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise UsageError(f'--write-keys {path}: expected a JSON object {{"tenant": "key"}}')
    return data


def emitter_from_args(args: argparse.Namespace, naming: EventNaming, failed: set[str]) -> Emitter:
    """The Emitter the delivery options describe; write keys are never shown in errors.

    ``failed`` receives the tenants with events not delivered (failures and pauses).
    Raises UsageError, also for a spool file that cannot be used: foreign, newer, damaged
    (every page is read first: see :func:`check_spool`) or not writable.
    """
    key = args.write_key or os.environ.get("SEGMENT_WRITE_KEY") or None
    if (key is None) == (args.write_keys is None):
        raise UsageError("give one of --write-key (or SEGMENT_WRITE_KEY) or --write-keys FILE.json")
    keys = _load_write_keys(args.write_keys) if args.write_keys else None
    check_spool(args.spool)
    try:
        return Emitter(
            key if keys is None else None,
            write_keys=keys,
            endpoint=args.endpoint,
            region=args.region,
            spool=args.spool,
            naming=naming,
            on_full="block",
            block_timeout=3600.0,
            on_failure=lambda failure: failed.add(failure.tenant),
            on_pause=lambda tenant, reason: failed.add(tenant),
        )
    except (ConfigurationError, SpoolError) as exc:
        raise UsageError(str(exc)) from None


def check_spool(spool: str) -> None:
    """UsageError naming the file and the reason when the spool file ``spool`` exists and
    is foreign, newer, damaged (SQLite reads every page) or not writable; a command then
    stops before any thread starts, with one line. A missing file is fine (created)."""
    if spool == "memory" or is_postgres_url(spool):
        return  # a database is checked when the Emitter connects
    try:
        path = spool_path(spool)
        if not path.exists():
            return
        with SpoolFile(path) as file:
            if file.read_only is not None:
                raise SpoolError(f"{path}: cannot write the spool file: {file.read_only}")
            file.check()
    except (ConfigurationError, SpoolError) as exc:
        raise UsageError(str(exc)) from None


def open_spool(args: argparse.Namespace) -> SpoolView:
    """The view of the existing spool ``--spool`` names (a spool file or a
    ``postgresql://`` URL); UsageError when it is missing or cannot be used."""
    try:
        return open_view(args.spool)
    except (ConfigurationError, SpoolError) as exc:
        raise UsageError(str(exc)) from None


def read_status(args: argparse.Namespace) -> SpoolStatus:
    """The status of the spool ``--spool`` names; UsageError when it cannot be read."""
    try:
        with open_spool(args) as spool:
            return spool.status()
    except SpoolError as exc:
        raise UsageError(str(exc)) from None


def print_json(obj: object) -> None:
    """Print ``obj`` on stdout as indented JSON (the ``--json`` output of the commands)."""
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print JSON for scripts instead of text."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_spool_option(parser: argparse.ArgumentParser) -> None:
    """``--spool PATH|URL``: the durable spool file or a PostgreSQL spool (default:
    $SELLIGENT_SEGMENT_SPOOL, else ~/.local/state/selligent-segment/spool.db)."""
    default = os.environ.get("SELLIGENT_SEGMENT_SPOOL") or str(default_spool_path())
    shown_default = redact(default) if is_postgres_url(default) else default
    parser.add_argument(
        "--spool",
        metavar="PATH|URL",
        default=default,
        help="the spool file, a PostgreSQL spool postgresql://user@host:port/db (password: "
        "PGPASSWORD or ~/.pgpass; ?spool_schema=NAME), or 'memory' where allowed "
        f"(default: {shown_default})",
    )
