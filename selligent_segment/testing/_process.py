"""Process mode: ``python -m selligent_segment.testing`` serves a LocalSegment until told to stop.

One job: the command line of a :class:`~selligent_segment.testing.LocalSegment` in a process
of its own (for benchmarks, and tests of a service in another language): parse the options,
start the server, print where it listens, wait for the signal to stop.

Guarantees: the first line on stdout is ``LISTENING <url>`` and is flushed once the socket
accepts connections; the process stops (exit status 0) when its stdin is a pipe or a
socket and closes (unless ``--ignore-stdin``; stdin from ``/dev/null``, a file or a terminal
is not watched), on SIGTERM or on SIGINT, closing every connection; an unknown option
or a bad ``--fault-mix`` exits with status 2 and a usage message before anything is bound.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from typing import IO

import orjson

from selligent_segment.testing._faults import parse_fault_control
from selligent_segment.testing._local_segment import LocalSegment
from selligent_segment.testing._local_selligent import LocalSelligent
from selligent_segment.testing._selligent_rules import SelligentList

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve as a process: print ``LISTENING <url>``, stop on SIGTERM, SIGINT or the end
    of a piped stdin.

    ``python -m selligent_segment.testing --port 0 [--fault-mix JSON] [--strict] [--latency S]``
    (also ``--host``, ``--write-key KEY`` repeated, ``--ignore-stdin``). The first stdout
    line is ``LISTENING http://127.0.0.1:PORT``; it serves until SIGTERM, SIGINT or, when
    stdin is a pipe or a socket, stdin's end (unless ``--ignore-stdin``), then returns 0.
    Besides ``/v1/batch`` every server answers ``GET /_stats`` (``{"accepted",
    "unique_message_ids", "requests", "dropped", "duplicates"}``, from counters),
    ``POST /_reset`` (clear records) and ``POST /_faults`` (body like ``{"seed": 1,
    "rates": {"500": 0.2, "429": 0.05, "drop": 0.05}, "retry_after": 1}``, optionally
    ``"outage": 503``; ``{}`` clears faults and ends any outage); ``--fault-mix`` takes
    the same JSON. The process keeps counters and the message-id set only
    (``record_events=False``).

    With ``--selligent`` it serves a :class:`~selligent_segment.testing.LocalSelligent`
    instead (``--api-key``, ``--organization``, ``--lists JSON``, ``--store-keys-only``),
    with the same control routes plus ``GET /_rows?list=NAME``; it keeps no request records.
    """
    parser = argparse.ArgumentParser(
        prog="python -m selligent_segment.testing",
        description="Local Segment /v1/batch server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--write-key",
        action="append",
        dest="write_keys",
        help="accept only these keys (repeatable; default: any non-empty key)",
    )
    parser.add_argument("--fault-mix", default=None, help="JSON fault mix, as for POST /_faults")
    parser.add_argument("--strict", action="store_true", help="answer 400 to invalid items")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="do not stop when stdin (a pipe or a socket) closes",
    )
    parser.add_argument(
        "--selligent",
        action="store_true",
        help="serve Selligent's data/load (a LocalSelligent) instead of Segment's /v1/batch",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="with --selligent: accept only these key:secret (repeatable; default: any)",
    )
    parser.add_argument("--organization", help="with --selligent: the only organization")
    parser.add_argument(
        "--lists",
        help='with --selligent: JSON {"LIST": {"column": "Text" or {"type", "max_length"}}}',
    )
    parser.add_argument(
        "--store-keys-only",
        action="store_true",
        help="with --selligent: keep each row's key only (for benchmarks)",
    )
    args = parser.parse_args(argv)

    control = None
    if args.fault_mix:
        try:
            control = parse_fault_control(args.fault_mix)
        except (ValueError, TypeError) as exc:
            parser.error(f"--fault-mix: {exc}")
    server: LocalSegment | LocalSelligent
    if args.selligent:
        lists = None
        if args.lists:
            try:
                lists = [
                    SelligentList.from_json(name, spec)
                    for name, spec in orjson.loads(args.lists).items()
                ]
            except (ValueError, TypeError, AttributeError) as exc:
                parser.error(f"--lists: {exc}")
        server = LocalSelligent(
            host=args.host,
            port=args.port,
            api_keys=args.api_keys,
            organization=args.organization,
            lists=lists,
            latency=args.latency,
            record_requests=False,
            store_rows=not args.store_keys_only,
        )
    else:
        server = LocalSegment(
            host=args.host,
            port=args.port,
            write_keys=args.write_keys,
            latency=args.latency,
            strict=args.strict,
            record_events=False,
        )
    if control is not None:
        server._control_faults(*control)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    watched = None if args.ignore_stdin else _pipe_or_socket(sys.stdin)
    if watched is not None:

        def _watch_stdin(fd: int) -> None:
            with contextlib.suppress(OSError, ValueError):
                while os.read(fd, 65536):
                    pass
            stop.set()

        threading.Thread(
            target=_watch_stdin, args=(watched,), name="stdin-watch", daemon=True
        ).start()

    with server:
        sys.stdout.write(f"LISTENING {server.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


def _pipe_or_socket(stream: IO[str] | None) -> int | None:
    """The descriptor of ``stream`` when it is a pipe or a socket, else None.

    Only there does the end of input mean the parent is done (it closed its end, or died);
    ``/dev/null``, a file or a terminal (a process started in the background of a script,
    ``docker run`` without ``-i``) is at its end at once, or never."""
    if stream is None:
        return None
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None
