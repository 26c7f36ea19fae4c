"""``selligent-segment ingest``: read bounce and complaint reports (an ``.eml`` file, an
mbox or a Maildir) or saved ESP webhook bodies, report what cannot be read with
``FILE:MESSAGE-N`` (or ``FILE``), and print (``--dry-run``) or deliver the records exactly
as ``send`` does: same delivery options, spool, progress, summary and exit statuses."""

from __future__ import annotations

import argparse
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import orjson

from selligent_segment._errors import ConfigurationError, InvalidEvent
from selligent_segment._record import CallbackRecord
from selligent_segment.cli._base import (
    PROG,
    Command,
    UsageError,
    add_delivery_options,
    add_json_option,
    add_spool_option,
    err,
)
from selligent_segment.cli._send import SendRunner, Sink
from selligent_segment.cli._summary import SendRun
from selligent_segment.inputs._result import InputError, InputProblem, Parsed
from selligent_segment.inputs.esp import PARSERS
from selligent_segment.inputs.reports import Join, parse_arf, parse_dsn, parse_path, table_resolver
from selligent_segment.inputs.reports._sources import check_path

__all__ = ["INGEST", "REPORT_KINDS"]

log = logging.getLogger("selligent_segment")

#: The report kinds and their parsers; the ESP kinds are the keys of ``inputs.esp.PARSERS``.
REPORT_KINDS = {"dsn": parse_dsn, "arf": parse_arf}

_DESCRIPTION = """\
Read bounce and complaint reports, or saved ESP webhook bodies, and send their records as
Segment track messages (or print the messages with --dry-run).

KIND and PATH:
  dsn   bounces: RFC 3464 delivery status notifications (older formats with the
        'bounces' extra); delayed and delivered notices are not bounces and are skipped
  arf   feedback-loop complaints (RFC 5965)
        PATH: a message file (.eml), an mbox, or a Maildir directory
  ses, sendgrid, mailgun, postmark, sparkpost
        PATH: a file holding one webhook request body, as the provider posted it
        (signatures are not checked: replay only what your endpoint already verified)

Which tenant and send: --tenant gives every record without one a tenant; --join FILE.json
maps the platform's join keys to record fields, e.g.
  {"t-acme.em-42.r-1": {"tenant": "acme", "email_id": "em-42", "user_id": "u-1001"},
   "20261120.em-40@mail.platform.example": {"tenant": "acme", "email_id": "em-40"}}
keyed by VERP token (--verp), platform header value (--header) or original Message-ID.
"""

_EPILOG = """\
locations:
  a problem is reported as WHERE: field: reason, WHERE being FILE for a single message or a
  webhook file as a whole, FILE:event-N for the Nth event of a webhook file,
  FILE:MESSAGE-N for the Nth message of an mbox or a Maildir (Maildir in file name order),
  with ' recipient N' for one recipient of a multi-recipient report

re-running is safe:
  every record's event_id comes from the report (its Message-ID, else its bytes) and the
  recipient, so ingesting the same mailbox again gives the same messageIds, and Segment
  drops the copies it already received

exit status:
  0  every message was read (and, when sending, every record delivered)
  1  some messages or recipients could not be read: reported on stderr
  2  usage error, a PATH that cannot be read, or an unusable spool file
  3  some records were not delivered (the tenants are named, never their keys)
  130, 143  interrupted (Ctrl-C, SIGTERM): re-run to resume
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=[*REPORT_KINDS, *PARSERS], metavar="KIND")
    parser.add_argument("files", nargs="+", metavar="PATH")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print one track message per record as a JSON line on stdout; send nothing",
    )
    parser.add_argument("--tenant", metavar="NAME", help="the tenant of records without one")
    parser.add_argument(
        "--join",
        metavar="FILE.json",
        help="a JSON object: join key (VERP token, header value, Message-ID) -> record fields",
    )
    parser.add_argument(
        "--verp",
        metavar="REGEX",
        help="where the VERP token is in an envelope address: a group named 'token' (or the "
        r"first group), e.g. 'bounces\+(?P<token>[^@]+)@'",
    )
    parser.add_argument(
        "--header",
        action="append",
        metavar="NAME",
        help="the platform's header in the original message holding its join key "
        "(repeatable; default: X-Platform-Recipient)",
    )
    add_json_option(parser)
    add_spool_option(parser)
    add_delivery_options(parser)


def _load_join(path: str) -> dict[str, Mapping[str, Any]]:
    try:
        with open(path, "rb") as stream:
            data = orjson.loads(stream.read())
    except OSError as exc:
        raise UsageError(f"--join {path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--join {path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(f'--join {path}: expected a JSON object {{"key": {{record fields}}}}')
    return data


def _join_from(args: argparse.Namespace) -> Join:
    resolver = table_resolver(_load_join(args.join)) if args.join else None
    try:
        return Join(
            resolver=resolver,
            verp=args.verp,
            headers=tuple(args.header or ("X-Platform-Recipient",)),
            tenant=args.tenant,
        )
    except ConfigurationError as exc:
        raise UsageError(f"--{exc.setting}: {exc.reason}") from None


def _esp_parser(kind: str) -> Callable[[bytes, str], Parsed]:
    return PARSERS[kind]


class _Ingest(SendRunner):
    """One run of ``ingest``: ``send``'s run reading reports or webhook bodies."""

    name = "ingest"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.messages = 0
        self.records = 0
        self.skipped = 0  # ESP events read that are none of the six (not problems)
        self.join = Join()

    def open_inputs(self) -> None:
        """Check the options and that every PATH can be read, before anything is sent."""
        self.join = _join_from(self.args)
        reports = self.args.kind in REPORT_KINDS
        for path in self.args.files:
            try:
                if reports:
                    check_path(path)
                elif os.path.isdir(path):
                    raise InputError(path, "path", "a directory, not a webhook body file")
                elif stat.S_ISREG(os.stat(path).st_mode):  # not a pipe: opening one loses it
                    with open(path, "rb"):
                        pass
            except OSError as exc:
                raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
            except InputError as exc:
                raise UsageError(str(exc)) from None

    def _parsed(self) -> Iterator[tuple[str, Parsed]]:
        kind = self.args.kind
        if kind in REPORT_KINDS:
            for path in self.args.files:
                yield from parse_path(path, REPORT_KINDS[kind], self.join)
            return
        parse = _esp_parser(kind)
        for path in self.args.files:
            try:
                with open(path, "rb") as stream:
                    body = stream.read()
            except OSError as exc:
                raise InputError(path, "path", f"cannot read: {exc.strerror or exc}") from None
            try:
                parsed = parse(body, path)
            except InputError as exc:
                parsed = Parsed(problems=(_problem(exc),))
            except Exception as exc:  # a body no rule foresaw: that file's problem only
                reason = f"cannot be read ({type(exc).__name__})"
                parsed = Parsed(problems=(InputProblem(path, "body", reason),))
            yield path, parsed

    def read_all(self, sink: Sink) -> None:
        """Every record of every PATH into ``sink``; every problem reported."""
        try:
            for where, parsed in self._parsed():
                self.messages += 1
                for problem in parsed.problems:
                    if problem.reason.startswith("skipped: "):  # read, not one of the six
                        self.skipped += 1
                        log.info("%s", problem)  # shown with -v
                        continue
                    self.refuse(problem.where, InvalidEvent(problem.field, problem.reason))
                for index, record in enumerate(parsed.records):
                    self.records += 1
                    record = self._placed(record)
                    self.offer(sink, parsed.place(index, where), record, _record_size(record))
                if self.progress.due():
                    detail = (
                        f"{self.messages:,} messages  {self.records:,} records  "
                        f"{self.invalid:,} problems{sink.detail()}"
                    )
                    self.progress.show("reading", self.messages, None, detail)
        except InputError as exc:  # a PATH that became unreadable: stop as send does
            reason = exc.reason.removeprefix("cannot read: ")
            raise OSError(0, reason, exc.where) from None

    def _placed(self, record: CallbackRecord) -> CallbackRecord:
        """An ESP record without a tenant gets ``--tenant`` (reports get it from the Join)."""
        if record.tenant is None and self.args.tenant and self.args.kind not in REPORT_KINDS:
            return attrs.evolve(record, tenant=self.args.tenant)
        return record

    def json_summary(self, run: SendRun, stopped: int | None, status: int) -> dict[str, object]:
        """``ingest --json``: ingest's reading counts (messages or webhook bodies read,
        records made, problems reported, inputs), then the delivery as ``send --json``
        has it (see docs/operations.md)."""
        delivery = super().json_summary(run, stopped, status)
        for key in ("read", "valid", "invalid", "inputs"):  # send's reading counts
            del delivery[key]
        return {
            "messages": self.messages,
            "records": self.records,
            "skipped": self.skipped,
            "problems": self.invalid,
            "inputs": len(self.args.files),
            **delivery,
        }

    def summary_of_reading(self) -> None:
        if self.args.quiet:
            return
        inputs = len(self.args.files)
        what = "messages" if self.args.kind in REPORT_KINDS else "webhook bodies"
        err(
            f"{PROG}: read {self.messages:,} {what} from {inputs} input"
            f"{'s' if inputs != 1 else ''}: {self.records:,} records, "
            + (f"{self.skipped:,} events skipped, " if self.skipped else "")
            + f"{self.invalid:,} problems"
        )


def _record_size(record: CallbackRecord) -> int:
    """The bytes of ``record``'s JSON Lines form: the size of the line ``send`` would read
    for it, which bounds its message as a line's size does (see ``SURELY_SMALL`` in ``_send``); far
    cheaper than encoding it, which the emitter's encoder does anyway."""
    return len(orjson.dumps(record.to_dict()))


def _problem(exc: InputError) -> InputProblem:
    return InputProblem(exc.where, exc.field, exc.reason)


def _run(args: argparse.Namespace) -> int:
    return _Ingest(args).run()


INGEST = Command(
    name="ingest",
    help="send the records of bounce/complaint reports or saved ESP webhooks (or print them)",
    description=_DESCRIPTION,
    epilog=_EPILOG,
    configure=_configure,
    run=_run,
)
