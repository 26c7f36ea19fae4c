"""``selligent-segment destination replay``: backfill exported Segment events.

Reads JSON Lines files (one event, or an array of events, per line), maps each through
one tenant's mapping and loads the rows through the same spool file and loader as
``serve`` (so a replay interrupted by Ctrl-C, SIGTERM or a crash is finished by the next
``serve`` or ``replay`` on the same spool). ``--dry-run`` prints the rows instead, as JSON
lines, and loads nothing.

Guarantees: a bad line or an event that cannot be mapped is reported as ``FILE:LINE:
reason`` (``FILE:LINE[i]`` inside an array) on stderr and never stops the others; events
are deduplicated on ``messageId`` within the run; the summary says how many rows were
loaded, skipped, refused, and left in the spool; loads are upserts, so replaying twice
changes nothing. A spool at its size cap is waited on (its rows load and make room) up to
``--timeout`` seconds at a time; one that stays full (Selligent down, the tenant paused)
or a journal that cannot be written stops the reading with the summary, the rows not
journaled counted, and exit status 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from selligent_segment.cli._base import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
    PROG,
    Command,
    err,
    interrupts_held,
)
from selligent_segment.cli._destination_config import load_or_report
from selligent_segment.cli._destination_serve import add_loader_options, loader_settings
from selligent_segment.cli._progress import Progress
from selligent_segment.destination._receiver import UNREADABLE, Unreadable, read_json

__all__ = ["REPLAY"]

_CHUNK = 1000

_EPILOG = """\
Exported events carry no tenant: name it with --tenant (needed when the config has more
than one). Bad lines and unmappable events are reported as FILE:LINE: reason.

exit status:
  0  every event was loaded or deliberately skipped
  1  some lines or events were refused (each reported on stderr)
  2  usage error, or a file could not be read
  3  some rows were not loaded (refused by Selligent, left in the spool, or not journaled
     because the spool stayed full: see the summary)
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    add_loader_options(parser)
    parser.add_argument("files", nargs="+", metavar="EVENTS.jsonl", help="exported events")
    parser.add_argument("--tenant", metavar="NAME", help="the tenant the events belong to")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the rows (JSON lines) and load nothing"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the loads after reading, and for room in a full spool "
        "before stopping (default 300)",
    )


def _events(path: str) -> Iterator[tuple[str, Any]]:
    """(FILE:LINE, event) per event, or (FILE:LINE, reason) as a str for a bad line."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, read line by line
    except OSError as exc:
        raise OSError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            # As the receiver reads a body: a lone surrogate escape is read, and one
            # unreadable element of an array costs no other.
            data, error = read_json(line, limit=None)
            if data is UNREADABLE:
                yield where, f"invalid JSON ({error})"
            elif isinstance(data, list):
                for index, item in enumerate(data):
                    yield f"{where}[{index}]", event_or_reason(item)
            else:
                yield where, event_or_reason(data)


def event_or_reason(value: Any, not_object: str = "not a JSON object (an event)") -> Any:
    """An element read by ``read_json``: the event (a dict), or why it is not one."""
    if isinstance(value, dict):
        return value
    if isinstance(value, Unreadable):
        return f"invalid JSON ({value.reason.removeprefix('malformed JSON: ')})"
    return not_object


class _Stopped(Exception):
    """The rows in hand could not be journaled: the spool stayed full, or its journal
    cannot be written."""


def _journal(loader: Any, rows: list[Any], timeout: float) -> None:
    """``loader.accept(rows)``, waiting up to ``timeout`` seconds while the spool is at
    its cap for the rows already in it to load and make room; _Stopped when it stays full
    (nothing is loading: Selligent down or the tenant paused) or cannot be written."""
    from selligent_segment._errors import SpoolError, SpoolFull

    deadline = time.monotonic() + timeout
    while True:
        try:
            loader.accept(rows)
            return
        except SpoolFull as exc:
            left = deadline - time.monotonic()
            # flush waits until the loads settle (no busy loop); idle with the spool
            # still full means nothing loading will make room (paused rows only)
            if left <= 0 or (loader.flush(min(left, 1.0)) and not _room_for(loader, rows)):
                raise _Stopped(str(exc)) from None
        except SpoolError as exc:
            raise _Stopped(str(exc)) from None


def _room_for(loader: Any, rows: list[Any]) -> bool:
    from selligent_segment.destination._rows import row_payload
    from selligent_segment.spool._journal import frame

    nbytes = sum(len(frame(row_payload(r))) for r in rows)
    return bool(loader.has_room(nbytes, {r.tenant for r in rows}))


def _run(args: argparse.Namespace) -> int:
    from selligent_segment._errors import ConfigurationError, SpoolError, SpoolFull
    from selligent_segment.destination._mapping import MappedRow, RowError, map_event

    loaded = load_or_report(args.config, require_secrets=not args.dry_run)
    if isinstance(loaded, int):
        return loaded
    if args.tenant is None and len(loaded.tenants) != 1:
        err(f"{PROG}: --tenant is needed: {args.config} has {len(loaded.tenants)} tenants")
        return EXIT_USAGE
    name = args.tenant or next(iter(loaded.tenants))
    tenant = loaded.tenants.get(name)
    if tenant is None:
        err(f"{PROG}: --tenant: no tenant {name} in {args.config}")
        return EXIT_USAGE
    loader: Any = None
    if not args.dry_run:
        from selligent_segment.destination._loader import Loader

        try:
            loader = Loader(loaded, args.spool, loader_settings(args)).start()
        except (ConfigurationError, SpoolError) as exc:
            err(f"{PROG}: {exc}")
            return EXIT_USAGE
    progress = Progress(sys.stderr)
    seen: set[str] = set()
    rows: list[MappedRow] = []
    events = refused = skipped = duplicates = mapped = unjournaled = 0
    interrupted = False
    stopped = ""
    where = ""
    try:
        for path in args.files:
            for where, event in _events(path):
                events += 1
                if isinstance(event, str):
                    refused += 1
                    progress.message(f"{where}: {event}")
                    continue
                message_id = event.get("messageId")
                if isinstance(message_id, str) and message_id:  # "" is none: refused below
                    if message_id in seen:
                        duplicates += 1
                        continue
                    seen.add(message_id)
                try:
                    result = map_event(tenant, event)
                except RowError as exc:
                    refused += 1
                    progress.message(f"{where}: {exc}")
                    continue
                if not isinstance(result, MappedRow):
                    skipped += 1
                    continue
                mapped += 1
                if args.dry_run:
                    print(_dry_line(where, result))
                    continue
                rows.append(result)
                if len(rows) >= _CHUNK:
                    _journal(loader, rows, args.timeout)
                    rows = []
                if progress.due():
                    progress.show("replay", events, None, f"{mapped} rows")
        if loader is not None:
            _journal(loader, rows, args.timeout)
            rows = []
            progress.show("replay", events, None, f"{mapped} rows; loading")
            loader.flush(args.timeout)
    except OSError as exc:
        progress.close()
        err(f"{PROG}: {exc}")
        if loader is not None:
            loader.close(0.0)
        return EXIT_USAGE
    except _Stopped as exc:
        stopped = f"{exc}: stopped after {where}"
        unjournaled, rows = len(rows), []
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    loaded_rows = rejected = left = 0
    if loader is not None:
        if rows:  # journaled, interrupted or not: the summary counts them in the spool
            with interrupts_held():
                try:
                    loader.accept(rows)
                except (SpoolFull, SpoolError):
                    unjournaled = len(rows)
        loader.close(0.0 if interrupted else 1.0)
        stats = loader.stats()
        loaded_rows = stats.delivered
        rejected = sum(stats.rejected.values())
        left = mapped - loaded_rows - rejected - unjournaled
    if stopped:
        err(
            f"{PROG}: {stopped}: the last {unjournaled} rows mapped up to there were not "
            "journaled, nor anything after read; replay the files again once the spool has "
            "room (loads are upserts)"
        )
    what = "would load" if args.dry_run else "loaded"
    count = mapped if args.dry_run else loaded_rows
    err(
        f"{PROG}: {events} events from {len(args.files)} file(s): {count} rows {what}, "
        f"{skipped} skipped, {duplicates} duplicates, {refused} refused"
        + (
            ""
            if args.dry_run
            else f", {rejected} refused by Selligent, {left} left in the spool {args.spool}"
            + (f", {unjournaled} not journaled" if unjournaled else "")
        )
    )
    if interrupted:
        raise KeyboardInterrupt
    if rejected or left > 0 or unjournaled:
        return EXIT_UNDELIVERED
    return EXIT_INVALID if refused else EXIT_OK


def _dry_line(where: str, row: Any) -> str:
    return orjson.dumps(
        {
            "source": where,
            "tenant": row.tenant,
            "list": row.list,
            "keyFields": list(row.key_fields),
            "row": dict(zip(row.columns, row.values, strict=True)),
        }
    ).decode()


REPLAY = Command(
    name="replay",
    help="backfill exported Segment events (JSON Lines) into Selligent",
    description="Map exported Segment events through a tenant's mapping and load them.",
    epilog=_EPILOG,
    configure=_configure,
    run=_run,
)
