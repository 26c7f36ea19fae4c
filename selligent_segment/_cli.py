"""The ``selligent-segment`` command.

Exit status: 0 every record valid (and, when sending, delivered); 1 some records were
invalid or not delivered; 2 usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from selligent_segment._mapping import encode
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment._reader import read_records
from selligent_segment._version import __version__

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

_EPILOG = """exit status:
  0  every record was valid (and delivered)
  1  some records were invalid (reported on stderr as FILE:LINE: reason) or not delivered
  2  usage error or an input file could not be read
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
        "--profile",
        choices=sorted(PROFILES),
        default="selligent",
        help="event-name profile (default: selligent)",
    )
    return parser


def _send(args: argparse.Namespace) -> int:
    if not args.dry_run:
        print(
            "selligent-segment: send: delivery is not available in this version; use --dry-run",
            file=sys.stderr,
        )
        return EXIT_USAGE
    naming = EventNaming(profile=args.profile)
    out = sys.stdout.buffer
    status = EXIT_OK
    for path in args.files:
        try:
            for line in read_records(path):
                if line.record is None:
                    print(f"{line.where}: {line.error}", file=sys.stderr)
                    status = EXIT_INVALID
                    continue
                try:
                    message = encode(line.record, naming=naming)
                except ValueError as exc:
                    print(f"{line.where}: {exc}", file=sys.stderr)
                    status = EXIT_INVALID
                    continue
                out.write(message.body + b"\n")
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    out.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "send":
        return _send(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
