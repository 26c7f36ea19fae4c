"""The destination's config file as every ``destination`` subcommand loads it: the same
checks and the same problem lines as ``destination check``, so ``serve`` refuses to start
with the text ``check`` prints.

Guarantee: every problem goes to stderr, one per line (``FILE: tenant T, table ..., column
C: reason``), then a count; the caller gets the config or the exit status to return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selligent_segment.cli._base import EXIT_INVALID, EXIT_OK, EXIT_USAGE, PROG, err

if TYPE_CHECKING:
    from selligent_segment.destination._config import DestinationConfig

__all__ = ["load_or_report", "samples_or_report"]


def load_or_report(path: str, *, require_secrets: bool = True) -> DestinationConfig | int:
    """The config at ``path``, or the exit status after printing every problem on stderr
    as ``check`` does (``EXIT_USAGE`` for an unreadable file, else ``EXIT_INVALID``)."""
    from selligent_segment.destination._config import DestinationConfigError, load_config

    try:
        return load_config(path, require_secrets=require_secrets)
    except DestinationConfigError as exc:
        unreadable = len(exc.problems) == 1 and exc.problems[0].reason.startswith("cannot read")
        err(str(exc))
        if unreadable:
            return EXIT_USAGE
        err(f"{PROG}: {len(exc.problems)} problem(s) in {path}")
        return EXIT_INVALID


def samples_or_report(path: str, config: DestinationConfig) -> int:
    """Map the built-in samples through every tenant as ``check`` does: ``EXIT_OK``, or
    ``EXIT_INVALID`` after printing each problem on stderr in ``check``'s words."""
    from selligent_segment.destination._check import SAMPLE_EVENTS, check_samples

    problems, _ = check_samples(config, SAMPLE_EVENTS.items())
    if not problems:
        return EXIT_OK
    err(*(f"{path}: {problem}" for problem in problems))
    err(f"{PROG}: {len(problems)} problem(s) in {path} and its samples")
    return EXIT_INVALID
