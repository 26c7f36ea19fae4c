"""``selligent-segment destination serve``: the receiver and the loader in one process.

Loads the config (refusing to start, with ``check``'s text, on any problem, the built-in
samples included), opens the spool file (what a previous run left is loaded first),
binds the socket and prints ``LISTENING http://HOST:PORT`` on stdout once it accepts
connections, then serves under uvicorn (the ``server`` extra).

SIGTERM or Ctrl-C: stop accepting (uvicorn finishes the requests under way: each is
journaled before its answer), flush for ``--flush-timeout`` seconds, and leave the rest
in the spool file for the next start; the exit status is then 0.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    add_spool_option,
    err,
    out,
)
from selligent_segment.cli._destination_config import load_or_report, samples_or_report

__all__ = ["SERVE", "add_loader_options", "loader_settings"]

_EPILOG = """\
Segment's Webhooks destination posts to  http://HOST:PORT/segment/TENANT  (one tenant
per [tenants.NAME] of the config); GET /healthz answers 200 while serving.
Rows wait in the spool file (--spool) until Selligent took them: `selligent-segment spool
status --spool PATH` and `dead-letters --spool PATH` work on it.

exit status:
  0  stopped on SIGTERM or Ctrl-C (what was not loaded stays in the spool file)
  1  the config or its samples have problems (each on stderr, as `destination check`)
  2  usage error, an unreadable config, uvicorn not installed, or the port is taken
"""


def add_loader_options(parser: argparse.ArgumentParser) -> None:
    """The loader's options shared by ``serve`` and ``replay``."""
    from selligent_segment.destination._loader import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_LINGER,
        DEFAULT_MAX_SPOOL_BYTES,
        DEFAULT_REQUESTS_PER_MINUTE,
        DEFAULT_THREADS,
    )

    parser.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    add_spool_option(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per data/load request (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=DEFAULT_LINGER,
        metavar="S",
        help=f"seconds a first row waits for a fuller batch (default {DEFAULT_LINGER})",
    )
    parser.add_argument(
        "--requests-per-minute",
        type=float,
        default=DEFAULT_REQUESTS_PER_MINUTE,
        metavar="N",
        help=f"data/load requests per minute per API key (default {DEFAULT_REQUESTS_PER_MINUTE:,})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"sender threads shared by every tenant (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--max-spool-bytes",
        type=int,
        default=DEFAULT_MAX_SPOOL_BYTES,
        metavar="N",
        help="the spool file's size cap, shared by every tenant: over it serve answers 503 "
        f"and replay waits for room (default {DEFAULT_MAX_SPOOL_BYTES:,}, 1 GiB)",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="fsync each journal write before answering: a power cut, not only a kill, "
        "then loses no row answered 200 (each request waits for the disk)",
    )


def loader_settings(args: argparse.Namespace) -> Any:
    """The :class:`LoaderSettings` of the parsed options (ConfigurationError if bad)."""
    from selligent_segment.destination._loader import LoaderSettings

    return LoaderSettings(
        batch_size=args.batch_size,
        linger=args.linger,
        threads=args.threads,
        requests_per_minute=args.requests_per_minute,
        max_spool_bytes=args.max_spool_bytes,
        fsync=args.fsync,
    )


def _configure(parser: argparse.ArgumentParser) -> None:
    add_loader_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to keep loading after SIGTERM before leaving the rest (default 10)",
    )
    parser.add_argument(
        "--no-builtin-samples",
        action="store_true",
        help="start even when the built-in samples cannot be mapped (a key taken from a "
        "trait of your own); the config itself is still checked",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="N",
        help="the largest request body accepted (default 128 MiB: Segment's largest batch, "
        "4,000 events of 32 KB)",
    )


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Iterator[list[int]]:
    """SIGTERM and SIGINT call ``stop()`` (in the main thread); yields the signals seen."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield seen
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(args: argparse.Namespace) -> int:
    from selligent_segment._errors import ConfigurationError, SpoolError

    loaded = load_or_report(args.config)
    if isinstance(loaded, int):
        return loaded
    if not args.no_builtin_samples:
        status = samples_or_report(args.config, loaded)
        if status != EXIT_OK:
            return status
    try:
        import uvicorn
    except ImportError:
        err(f"{PROG}: destination serve needs uvicorn: pip install 'selligent-segment[server]'")
        return EXIT_USAGE
    from selligent_segment.destination._loader import Loader
    from selligent_segment.destination._receiver import DEFAULT_MAX_BODY_BYTES, Receiver

    try:
        settings = loader_settings(args)
    except ConfigurationError as exc:
        err(f"{PROG}: {exc}")
        return EXIT_USAGE
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        err(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror}")
        return EXIT_USAGE
    try:
        loader = Loader(loaded, args.spool, settings).start()
    except SpoolError as exc:
        sock.close()
        err(f"{PROG}: {exc}")
        return EXIT_USAGE
    receiver = Receiver(
        loaded, loader, max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES
    )
    config = uvicorn.Config(receiver, log_level="warning", lifespan="off", access_log=False)
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    out(f"LISTENING http://{shown_host}:{port}")
    err(f"{PROG}: serving {len(loaded.tenants)} tenant(s) at http://{shown_host}:{port}"
        f"/segment/TENANT; spool {loader.path}")  # fmt: skip

    def stop() -> None:
        receiver.closing = True  # /healthz answers 503 from the signal on
        server.stop()

    try:
        with _stop_on_signals(stop) as seen:
            server.run(sockets=[sock])
        why = "SIGTERM" if signal.SIGTERM in seen else "interrupted" if seen else "stopped"
        err(f"{PROG}: {why}: no new requests; loading for up to {args.flush_timeout:g} s")
    finally:
        receiver.closing = True
        sock.close()
        loader.close(args.flush_timeout)
    stats = loader.stats()
    left = _left(loader)
    err(
        f"{PROG}: stopped: {stats.accepted} rows accepted, {stats.delivered} loaded, "
        f"{sum(stats.rejected.values())} dead letters; {left} left in the spool {loader.path}"
    )
    return EXIT_OK


def _left(loader: Any) -> int:
    from selligent_segment.spool._file import SpoolFile

    try:
        with SpoolFile(loader.path) as spool:
            return int(spool.status().queued)
    except Exception:  # the summary must not fail the stop
        return -1


class _Server:
    """uvicorn's server without its own signal handling (ours stops it, then flushes)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self._server = Quiet(config)

    def run(self, sockets: list[socket.socket]) -> None:
        self._server.run(sockets=sockets)

    def stop(self) -> None:
        self._server.should_exit = True


SERVE = Command(
    name="serve",
    help="receive Segment's webhook calls and load them into Selligent",
    description="Serve POST /segment/TENANT for Segment's Webhooks destination and load "
    "the rows into each tenant's Selligent lists.",
    epilog=_EPILOG,
    configure=_configure,
    run=_run,
)
