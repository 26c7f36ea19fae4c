"""The ``selligent-segment`` command.

Exit status: 0 every record valid (and, when sending, delivered); 1 some records were
invalid; 2 usage error or unreadable input; 3 some valid records were not delivered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence

import orjson

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError, InvalidEvent, UnknownTenant
from selligent_segment._mapping import encode
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment._reader import Line, read_records
from selligent_segment._stats import Stats, TenantStats
from selligent_segment._version import __version__

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNDELIVERED = 3

_EPILOG = """exit status:
  0  every record was valid (and delivered)
  1  some records were invalid (reported on stderr as FILE:LINE: reason) or not delivered
  2  usage error or an input file could not be read
  3  some valid records were not delivered (the tenants affected are named; never keys)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selligent-segment",
        description="Turn email callbacks into Segment Email track events.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send = commands.add_parser(
        "send",
        help="read JSON Lines callback records and send them (or print them with --dry-run)",
        description="Read callback records (JSON Lines, one object per line; FILE may be '-' "
        "for stdin) and map each to one Segment track message.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument(
        "--dry-run",
        action="store_true",
        help="print one track message per valid record as a JSON line on stdout; send nothing",
    )
    send.add_argument(
        "--write-key",
        metavar="KEY",
        help="one write key for every record (default: $SEGMENT_WRITE_KEY)",
    )
    send.add_argument(
        "--write-keys",
        metavar="FILE.json",
        help='a JSON object {"tenant": "key"}: each record goes to its tenant\'s workspace',
    )
    send.add_argument("--endpoint", metavar="URL", help="a custom endpoint (e.g. a proxy)")
    send.add_argument("--region", choices=["us", "eu"], default="us", help="(default: us)")
    send.add_argument(
        "--spool", choices=["memory"], default="memory", help="where events wait (memory)"
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for delivery before giving up (default: 300)",
    )
    send.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="selligent",
        help="event-name profile (default: selligent)",
    )
    return parser


def _report(where: str, error: Exception) -> None:
    print(f"{where}: {error}", file=sys.stderr)


class _Tally:
    """Invalid records seen by one run of the command."""

    def __init__(self) -> None:
        self.invalid = 0


def _valid_lines(paths: Sequence[str], tally: _Tally) -> Iterator[Line]:
    """Valid lines of every file, in order; invalid ones are reported, counted, skipped.

    Raises OSError for a file that cannot be opened.
    """
    for path in paths:
        for line in read_records(path):
            if line.record is None:
                assert line.error is not None
                _report(line.where, line.error)
                tally.invalid += 1
            else:
                yield line


def _dry_run(args: argparse.Namespace, naming: EventNaming, tally: _Tally) -> int:
    out = sys.stdout.buffer
    for line in _valid_lines(args.files, tally):
        assert line.record is not None
        try:
            message = encode(line.record, naming=naming)
        except InvalidEvent as exc:
            _report(line.where, exc)
            tally.invalid += 1
            continue
        out.write(message.body + b"\n")
    out.flush()
    return EXIT_INVALID if tally.invalid else EXIT_OK


def _load_write_keys(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as stream:
            data = orjson.loads(stream.read())
    except OSError as exc:
        raise _UsageError(f"--write-keys {path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise _UsageError(f"--write-keys {path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise _UsageError(f'--write-keys {path}: expected a JSON object {{"tenant": "key"}}')
    return data


class _UsageError(Exception):
    pass


def _emitter(args: argparse.Namespace, naming: EventNaming, failed: set[str]) -> Emitter:
    key = args.write_key or os.environ.get("SEGMENT_WRITE_KEY") or None
    if (key is None) == (args.write_keys is None):
        raise _UsageError(
            "give one of --write-key (or SEGMENT_WRITE_KEY) or --write-keys FILE.json"
        )
    keys = _load_write_keys(args.write_keys) if args.write_keys else None
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
    except ConfigurationError as exc:
        raise _UsageError(str(exc)) from None


def _deliver(args: argparse.Namespace, naming: EventNaming, tally: _Tally) -> int:
    failed: set[str] = set()
    emitter = _emitter(args, naming, failed)
    emitted = 0
    try:
        for line in _valid_lines(args.files, tally):
            assert line.record is not None
            try:
                emitter.emit(line.record)
                emitted += 1
            except (InvalidEvent, UnknownTenant) as exc:
                _report(line.where, exc)
                tally.invalid += 1
        # Wait for delivery, but not for tenants that are paused (refused key): their
        # events cannot go until the key changes.
        deadline = time.monotonic() + args.timeout
        while not emitter.flush(0.2) and time.monotonic() < deadline:
            stats = emitter.stats()
            if all(stats.tenants[t].paused for t, n in _queued(stats).items() if n):
                break
    finally:
        emitter.close(0)
    stats = emitter.stats()
    undelivered = stats.accepted - stats.delivered
    print(
        f"selligent-segment: {emitted} events accepted, {stats.delivered} delivered, "
        f"{undelivered} not delivered, {tally.invalid} invalid records",
        file=sys.stderr,
    )
    if undelivered:
        tenants = sorted(failed | {t for t, n in _queued(stats).items() if n})
        for tenant in tenants:
            detail = stats.tenants.get(tenant)
            why = _why(detail) if detail is not None else "not delivered"
            print(f"selligent-segment: tenant {tenant!r}: {why}", file=sys.stderr)
        return EXIT_UNDELIVERED
    return EXIT_INVALID if tally.invalid else EXIT_OK


def _queued(stats: Stats) -> dict[str, int]:
    return {t: s.queued for t, s in stats.tenants.items()}


def _why(detail: TenantStats) -> str:
    parts = [f"{n} {reason}" for reason, n in {**detail.rejected, **detail.dropped}.items()]
    if detail.paused:
        parts.append(f"paused: {detail.paused}")
    return "; ".join(parts) or "not delivered"


def _send(args: argparse.Namespace) -> int:
    naming = EventNaming(profile=args.profile)
    tally = _Tally()
    try:
        if args.dry_run:
            return _dry_run(args, naming, tally)
        return _deliver(args, naming, tally)
    except _UsageError as exc:
        print(f"selligent-segment: send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{exc.filename}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "send":
        return _send(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
