"""``selligent-segment dead-letters list|requeue|purge``: the dead letters of a spool
(a file or PostgreSQL), listed, sent again or deleted."""

from __future__ import annotations

import argparse

from selligent_segment._errors import SelligentSegmentError
from selligent_segment.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    UsageError,
    add_json_option,
    add_spool_option,
    err,
    open_spool,
    out,
    print_json,
)
from selligent_segment.cli._summary import dead_letter_rows

__all__ = ["DEAD_LETTERS"]


_DEAD_EPILOG = """\
Dead letters are messages Segment refused for good (400/413/422: reason 'rejected'),
batches given up after the retry budget ('retries_exhausted'), records too large to
send ('too_large'), and what could not be read back from a journal ('unreadable ...':
a damaged record, or damaged journal bytes kept raw). They stay in the spool file until
requeued or purged. --reason matches the start of the reason, e.g. --reason rejected.
--spool may be a PostgreSQL spool (postgresql://...): the dead letters of every host.
`list` works on a file this user may read but not write; requeue and purge say why not.

  list     print them (oldest first), with --json the whole message bodies too
  requeue  put them back in their tenants' queues, same messageId; running emitters pick
           them up within seconds, or run `selligent-segment flush`
  purge    delete them for good; without a filter, --all is required

exit status:
  0  done (also when nothing matched)
  2  usage error, or the spool file is missing or unusable
"""


def _configure_dead_letters(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("list", "print dead letters"),
        ("requeue", "send dead letters again"),
        ("purge", "delete dead letters"),
    ):
        child = sub.add_parser(action, help=text)
        add_spool_option(child)
        child.add_argument("--tenant", help="only this tenant's")
        child.add_argument("--reason", help="only those whose reason starts with this")
        add_json_option(child)
        if action == "list":
            child.add_argument("--limit", type=int, help="at most this many")
        else:
            child.add_argument(
                "--id", type=int, action="append", dest="ids", help="only this id (repeatable)"
            )
        if action == "purge":
            child.add_argument("--all", action="store_true", help="purge with no filter")


def _run_dead_letters(args: argparse.Namespace) -> int:
    try:
        with open_spool(args) as spool:
            if args.action == "list":
                letters = spool.dead_letters(
                    tenant=args.tenant, reason=args.reason, limit=args.limit
                )
                if args.json:
                    print_json([d.to_dict() for d in letters])
                else:
                    out(*dead_letter_rows(letters))
                    if not args.quiet:  # the count on stderr is a note, not the output
                        err(f"{len(letters)} dead letters")
                return EXIT_OK
            filters = {"tenant": args.tenant, "reason": args.reason, "ids": args.ids}
            for name in ("tenant", "reason"):  # "" would match every dead letter
                if filters[name] is not None and not str(filters[name]).strip():
                    raise UsageError(f"--{name} is empty (an unset variable?); give one, or --all")
            if (
                args.action == "purge"
                and not args.all
                and not any(v is not None for v in filters.values())
            ):
                raise UsageError("purge without --tenant, --reason or --id needs --all")
            act = spool.requeue if args.action == "requeue" else spool.purge
            count = act(**filters)
    except (UsageError, SelligentSegmentError) as exc:
        err(f"{PROG} dead-letters {args.action}: {exc}")
        return EXIT_USAGE
    verb = "requeued" if args.action == "requeue" else "purged"
    if args.json:
        print_json({verb: count})
    else:
        out(f"{count} dead letters {verb}")
    return EXIT_OK


DEAD_LETTERS = Command(
    name="dead-letters",
    help="list, requeue or purge dead letters",
    description="List, requeue or purge the dead letters of a spool (a file or PostgreSQL).",
    epilog=_DEAD_EPILOG,
    configure=_configure_dead_letters,
    run=_run_dead_letters,
)
