"""What every ``selligent-segment`` command shares: the Command record, exit statuses,
usage errors, the shared options (delivery, ``--spool``, ``--json``, and the output
options ``-v``/``--log-level``/``-q`` with the log handler they set up) with the Emitter
and the spool file they describe, and printing (lines on stderr or stdout, JSON)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError, SpoolError
from selligent_segment._keys_file import WriteKeysFileError, load_write_keys
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment.cli._progress import is_terminal
from selligent_segment.spool._file import SpoolFile, SpoolStatus
from selligent_segment.spool._postgres import is_postgres_url, redact
from selligent_segment.spool._schema import default_spool_path, spool_path
from selligent_segment.spool._view import SpoolView, open_view

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNDELIVERED = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell shows for a tool a closed pipe ended
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

    def add_to(self, subparsers: Any) -> argparse.ArgumentParser:
        """Add this subcommand to ``subparsers`` (what ``add_subparsers`` returned) with
        its help texts and arguments; the new parser, for the caller's defaults."""
        child: argparse.ArgumentParser = subparsers.add_parser(
            self.name,
            help=self.help,
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.configure(child)
        return child


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


def exit_status_of(args: argparse.Namespace, status: int) -> int:
    """What the process exits with for a command that returned ``status``: 143 when
    SIGTERM stopped it (``main`` marks ``args.terminated``; a command whose SIGTERM is its
    normal stop keeps its own), else ``status``. A ``--json`` summary says the same."""
    if getattr(args, "terminated", False) and not getattr(args, "sigterm_is_stop", False):
        return EXIT_TERMINATED
    return status


class OutputError(UsageError):
    """An output of the command (``--rejects``, stdout) that cannot be written: the run
    stops there (exit status 2), saying which and why."""


# -- output options and the log handler ---------------------------------------------------

#: The level of the library's log lines a command shows on stderr without options.
DEFAULT_LOG_LEVEL = logging.WARNING
_LEVELS = ("debug", "info", "warning", "error")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose`` (repeatable), ``--log-level LEVEL`` and ``-q``/``--quiet``,
    mutually exclusive, on every command."""
    group = parser.add_argument_group("output")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log lines on stderr: -v adds each retry (INFO), -vv debugging (DEBUG)",
    )
    choice.add_argument(
        "--log-level",
        choices=_LEVELS,
        type=str.lower,
        metavar="LEVEL",
        help=f"the least level of log lines shown on stderr: {', '.join(_LEVELS)} "
        "(default: warning)",
    )
    choice.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only errors: no progress bar, no summary, no warnings",
    )


def add_output_options_to_leaves(parser: argparse.ArgumentParser) -> None:
    """:func:`add_output_options` on ``parser``, or, when it has subcommands
    (``spool status``, ``dead-letters list``), on each of them: the options then go after
    the whole command's name, as ``send -v`` does."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        add_output_options(parser)
        return
    for action in subcommands:
        for child in action.choices.values():
            add_output_options_to_leaves(child)


def log_level(args: argparse.Namespace) -> int:
    """The level the output options ask for: ``--log-level``, else ERROR with ``-q``,
    INFO with ``-v``, DEBUG with ``-vv``, else :data:`DEFAULT_LOG_LEVEL`."""
    if getattr(args, "log_level", None):
        return int(logging.getLevelName(args.log_level.upper()))
    if getattr(args, "quiet", False):
        return logging.ERROR
    verbose = int(getattr(args, "verbose", 0) or 0)
    if verbose >= 2:
        return logging.DEBUG
    return logging.INFO if verbose == 1 else DEFAULT_LOG_LEVEL


class _LineFormatter(logging.Formatter):
    """``selligent-segment: error: tenant 'acme' paused: ...``: the program once, the
    level in lower case, the message (whose text never repeats the program's name). On
    a terminal the line first erases the progress bar it would otherwise follow (the bar
    is drawn again at its next update)."""

    def __init__(self, *, terminal: bool = False) -> None:
        super().__init__()
        self._erase = "\r\x1b[K" if terminal else ""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self._erase}{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(args: argparse.Namespace) -> logging.Handler:
    """Show the library's log lines on stderr from the level the output options ask for;
    returns the handler (installed once on the ``selligent_segment`` logger, which then
    does not pass its records on to the root logger, so no line is printed twice)."""
    logger = logging.getLogger("selligent_segment")
    for old in [h for h in logger.handlers if isinstance(h.formatter, _LineFormatter)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(terminal=is_terminal(sys.stderr)))
    level = log_level(args)
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # The older-format bounce detectors (flufl.bounce) log a traceback for each message
    # one of them fails on; the problem line says it. Shown with -vv only, through ours
    # (without a handler, Python's last resort printed it even with -q).
    detectors = logging.getLogger("flufl.bounce")
    for old in [h for h in detectors.handlers if isinstance(h.formatter, _LineFormatter)]:
        detectors.removeHandler(old)
    detectors.addHandler(handler)
    detectors.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL + 1)
    detectors.propagate = False
    return handler


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
        "--proxy",
        metavar="URL",
        help="an HTTP proxy for every request, http://[user:password@]host:port, or 'direct' "
        "for none (default: $HTTPS_PROXY/$HTTP_PROXY unless $NO_PROXY names the host)",
    )
    parser.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="a PEM file of the CA certificates to verify TLS with "
        "(default: $SSL_CERT_FILE, else certifi's bundle)",
    )
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
        return load_write_keys(path)
    except WriteKeysFileError as exc:
        raise UsageError(f"--write-keys {exc}") from None


def emitter_from_args(args: argparse.Namespace, naming: EventNaming, failed: set[str]) -> Emitter:
    """The Emitter the delivery options describe; write keys are never shown in errors.

    ``failed`` receives the tenants with events not delivered (failures and pauses).
    Raises UsageError, also for a spool file that cannot be used: foreign, newer, damaged
    (every page is read first: see :func:`check_spool`) or not writable.
    """
    key = args.write_key
    if key is None and args.write_keys is None:  # the environment is --write-key's default
        key = os.environ.get("SEGMENT_WRITE_KEY") or None
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
            proxy=_proxy_option(getattr(args, "proxy", None)),
            ca_bundle=getattr(args, "ca_bundle", None),
            spool=args.spool,
            naming=naming,
            on_full="block",
            block_timeout=3600.0,
            on_failure=lambda failure: failed.add(failure.tenant),
            on_pause=lambda tenant, reason: failed.add(tenant),
        )
    except (ConfigurationError, SpoolError) as exc:
        raise UsageError(str(exc)) from None


def _proxy_option(value: str | None) -> str | bool | None:
    """``--proxy``: None (the environment's), ``direct`` (False: none), or a URL."""
    if value is not None and value.strip().lower() == "direct":
        return False
    return value


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


def pipe_closed() -> int:
    """The reader of stdout went away (``... | head -1``): point stdout at /dev/null, so
    that the interpreter's last flush cannot fail again, and return
    :data:`EXIT_PIPE_CLOSED` (141, as a shell shows for a tool SIGPIPE ended); nothing is
    printed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - no stdout descriptor at all
        pass
    return EXIT_PIPE_CLOSED


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


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) off while the block runs (a close of at most a second or so,
    after a first Ctrl-C: a second one, which people press, raised in the middle of it
    and printed a traceback instead of the summary). In the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
