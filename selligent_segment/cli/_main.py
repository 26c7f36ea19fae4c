"""The ``selligent-segment`` command: the registry of subcommands, the parser, and
:func:`main`, which dispatches and turns SIGTERM into the interruption every command
already handles for Ctrl-C.

Every subcommand is a :class:`Command` (its name, help, how it configures its argparse
parser and the function that runs it), defined in a module of its own and listed once in
:data:`COMMANDS`; :func:`main` builds the parser from that list and dispatches. A new
subcommand is one more module and one more ``Command`` there.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from selligent_segment._version import __version__
from selligent_segment.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PROG,
    Command,
    add_output_options_to_leaves,
    err,
    exit_status_of,
    pipe_closed,
    setup_logging,
)
from selligent_segment.cli._dead_letters import DEAD_LETTERS
from selligent_segment.cli._demo import DEMO
from selligent_segment.cli._destination import DESTINATION
from selligent_segment.cli._flush import FLUSH
from selligent_segment.cli._ingest import INGEST
from selligent_segment.cli._relay import RELAY
from selligent_segment.cli._send import SEND
from selligent_segment.cli._status import SPOOL

_TOP_EPILOG = """exit status (see each command's --help for details):
  0  success: every record was valid (and delivered)
  1  some records were invalid (reported on stderr as FILE:LINE: field: reason)
  2  usage error, or an input could not be read
  3  some valid records were not delivered (the tenants are named, never their keys)
  141  the reader of standard output closed it (`... | head`): stopped, silently

every command takes -v/--verbose, --log-level LEVEL or -q/--quiet (after its name)

documentation: docs/index.md (build it with: mkdocs build)
"""


def _parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn email callbacks into Segment Email track events.",
        epilog=_TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        child = command.add_to(sub)
        add_output_options_to_leaves(child)
        child.set_defaults(run=command.run, sigterm_is_stop=command.sigterm_is_stop)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled where Ctrl-C is: the command stops, says what it did, and what
    was accepted stays in the spool file (or is reported, in memory)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status. SIGTERM stops a command the way
    Ctrl-C does, with its summary, and the status is then 143."""
    args = _parser(COMMANDS).parse_args(argv)
    setup_logging(args)
    run: Callable[[argparse.Namespace], int] = args.run

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        args.terminated = True  # read by exit_status_of, also for a --json summary
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise _Terminated

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        status = run(args)
    except _Terminated:  # arrived outside the places that report an interruption
        err(f"{PROG}: terminated (SIGTERM)")
        status = EXIT_TERMINATED
    except KeyboardInterrupt:  # likewise (a Ctrl-C where no command catches it)
        err(f"{PROG}: interrupted")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`... | head -1`)
        return pipe_closed()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return exit_status_of(args, status)


#: Every subcommand, in the order ``--help`` lists them.
COMMANDS: tuple[Command, ...] = (
    SEND,
    INGEST,
    FLUSH,
    RELAY,
    SPOOL,
    DEAD_LETTERS,
    DEMO,
    DESTINATION,
)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
