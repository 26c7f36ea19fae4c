"""``selligent-segment destination ...``: the command group of Selligent's Segment destination,
and its ``check`` subcommand.

The group is one :class:`~selligent_segment.cli._base.Command` (:data:`DESTINATION`, listed
in ``cli/_main.py``) whose subcommands are :data:`SUBCOMMANDS`, each a ``Command`` of its
own. **Adding a subcommand** (``serve``, ``replay``, ``demo``) is one module defining its
``Command`` and one more entry in :data:`SUBCOMMANDS` below; the group builds each
subparser from it (name, help, description, epilog, ``configure``) and dispatches to its
``run``, whose return value is the exit status.

``check`` loads the config file (every problem at once, each naming tenant, table, column
and reason), then maps the built-in sample events and the customer's own (``--events``)
through every tenant's mapping; an event a mapping cannot map is a problem too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from selligent_segment.cli._base import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    UsageError,
    add_json_option,
    err,
    out,
    print_json,
)
from selligent_segment.cli._destination_config import load_or_report
from selligent_segment.cli._destination_demo import DEMO
from selligent_segment.cli._destination_replay import REPLAY, event_or_reason
from selligent_segment.cli._destination_serve import SERVE
from selligent_segment.destination._receiver import UNREADABLE, read_json

__all__ = ["CHECK", "DESTINATION", "SUBCOMMANDS"]


_CHECK_EPILOG = """\
Reads the config file (secrets are read from the environment variables it names, never
from the file), reports every problem at once as FILE: tenant T, table identify|track,
column C: reason, then maps two built-in sample events (an identify and a track shaped
like the seed schemas) and every event of --events through every tenant's mapping: an
event that cannot be mapped (a key column with no value, a value its format cannot read)
is reported the same way. Mapped samples are listed by column names, without values
(--show-values prints them).

--events FILE.jsonl: one Segment event (a JSON object) or batch (an array) per line.

exit status:
  0  the config is valid and every sample maps (or is skipped with a reason)
  1  problems were found (each on stderr, one per line)
  2  usage error, or the config file or --events could not be read
"""


def _configure_check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    parser.add_argument(
        "--events", metavar="FILE.jsonl", help="your own sample events, one per line"
    )
    parser.add_argument(
        "--no-builtin-samples", action="store_true", help="map only the --events samples"
    )
    parser.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        metavar="NAME",
        help="map the samples for this tenant only (repeatable; default: every tenant)",
    )
    parser.add_argument(
        "--skip-secrets",
        action="store_true",
        help="do not require the secrets' environment variables to be set",
    )
    parser.add_argument(
        "--show-values", action="store_true", help="print the mapped values (personal data)"
    )
    add_json_option(parser)


def _read_events(path: str) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """(label, event) per event of the JSONL file, or (label, reason) for a bad line."""
    try:
        with open(path, "rb") as stream:
            lines = stream.read().splitlines()
    except OSError as exc:
        raise UsageError(f"--events {path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label = f"{path}:{number}"
        # As the receiver (and replay) read a body: a lone surrogate escape is read, and
        # one unreadable element of an array costs no other.
        data, error = read_json(line, limit=None)
        if data is UNREADABLE:
            yield label, f"invalid JSON ({error})"
            continue
        items = data if isinstance(data, list) else [data]
        for index, item in enumerate(items):
            item_label = label if len(items) == 1 else f"{label}[{index}]"
            yield item_label, event_or_reason(item, "not a JSON object")


def _run_check(args: argparse.Namespace) -> int:
    from selligent_segment.destination._check import SAMPLE_EVENTS, check_samples
    from selligent_segment.destination._config import DestinationConfig
    from selligent_segment.destination._mapping import MappedRow, Skipped

    loaded = load_or_report(args.config, require_secrets=not args.skip_secrets)
    if isinstance(loaded, int):
        return loaded
    config = loaded

    if args.tenants:
        unknown = [name for name in args.tenants if name not in config.tenants]
        if unknown:
            err(f"{PROG}: --tenant: no tenant {', '.join(unknown)} in {args.config}")
            return EXIT_USAGE
        chosen = {name: config.tenants[name] for name in args.tenants}
        config = DestinationConfig(chosen, config.source)

    samples: list[tuple[str, Mapping[str, Any]]] = []
    bad_lines: list[str] = []
    if not args.no_builtin_samples:
        samples.extend(SAMPLE_EVENTS.items())
    if args.events:
        try:
            for label, event in _read_events(args.events):
                if isinstance(event, str):
                    bad_lines.append(f"{label}: {event}")
                else:
                    samples.append((label, event))
        except UsageError as exc:
            err(f"{PROG}: {exc}")
            return EXIT_USAGE

    problems, outcomes = check_samples(config, samples)
    lines: list[str] = []
    report: list[dict[str, Any]] = []
    for outcome in outcomes:
        result = outcome.result
        where = f"tenant {outcome.tenant}, sample {outcome.label}"
        if isinstance(result, MappedRow):
            shown = (
                ", ".join(f"{c}={v!r}" for c, v in zip(result.columns, result.values, strict=True))
                if args.show_values
                else ", ".join(result.columns)
            )
            lines.append(f"{where}: {result.kind} -> list {result.list}: {shown}")
            entry: dict[str, Any] = {"list": result.list, "columns": list(result.columns)}
            if args.show_values:
                entry["values"] = list(result.values)
            report.append({"tenant": outcome.tenant, "sample": outcome.label, "row": entry})
        elif isinstance(result, Skipped):
            lines.append(f"{where}: skipped ({result.reason})")
            report.append(
                {"tenant": outcome.tenant, "sample": outcome.label, "skipped": result.reason}
            )
        else:
            report.append(
                {"tenant": outcome.tenant, "sample": outcome.label, "problem": str(result)}
            )
    if args.json:
        print_json(
            {
                "valid": not problems and not bad_lines,
                "tenants": list(config.tenants),
                "samples": report,
                "problems": [str(p) for p in problems] + bad_lines,
            }
        )
    else:
        out(*lines)
    err(*(f"{args.config}: {problem}" for problem in problems), *bad_lines)
    n_problems = len(problems) + len(bad_lines)
    if n_problems:
        err(f"{PROG}: {n_problems} problem(s) in {args.config} and its samples")
        return EXIT_INVALID
    err(f"{args.config}: valid ({len(config.tenants)} tenant(s), {len(samples)} sample(s) each)")
    return EXIT_OK


CHECK = Command(
    name="check",
    help="validate a destination config file and map sample events through it",
    description="Validate the config file and each tenant's mapping against sample events.",
    epilog=_CHECK_EPILOG,
    configure=_configure_check,
    run=_run_check,
)

#: The group's subcommands, in the order ``--help`` lists them: add one here.
SUBCOMMANDS: tuple[Command, ...] = (CHECK, SERVE, REPLAY, DEMO)


def _configure_group(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="destination_command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_to(sub).set_defaults(destination_run=command.run)


def _run_group(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = args.destination_run
    return run(args)


DESTINATION = Command(
    name="destination",
    help="Selligent's Segment destination: check a config, serve, replay, demo",
    description="Segment identify and track calls into each customer's Selligent lists.",
    epilog="Run `selligent-segment destination COMMAND --help` for each command.",
    configure=_configure_group,
    run=_run_group,
)
