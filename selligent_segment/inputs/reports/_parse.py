"""The reports' public functions: parse one message (bytes) as a DSN, an ARF report or
either, and read every message at a path. None of them raises on any message: what cannot
be read is an :class:`InputProblem` naming where, the field and why."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from selligent_segment.inputs._result import InputProblem, Parsed
from selligent_segment.inputs.reports._arf import arf_records
from selligent_segment.inputs.reports._dsn import dsn_records
from selligent_segment.inputs.reports._heuristic import heuristic_records
from selligent_segment.inputs.reports._join import Join
from selligent_segment.inputs.reports._message import Report
from selligent_segment.inputs.reports._sources import read_messages

__all__ = ["parse_arf", "parse_dsn", "parse_path", "parse_report"]

_NO_JOIN = Join()


def _guarded(where: str, work: Callable[[], Parsed]) -> Parsed:
    try:
        return work()
    except Exception as exc:  # a message the email package chokes on
        reason = f"cannot be parsed ({type(exc).__name__})"
        return Parsed(problems=(InputProblem(where, "message", reason),))


def parse_dsn(data: bytes, where: str, join: Join = _NO_JOIN) -> Parsed:
    """The ``bounced`` records of one bounce message: an RFC 3464 DSN, else (with the
    ``bounces`` extra) an older format read heuristically. An ARF report is a problem
    here (``parse_arf`` reads it). Never raises."""

    def work() -> Parsed:
        report = Report(data, where)
        if report.report_type() == "feedback-report":
            reason = "an ARF feedback report, not a bounce (read it as arf)"
            return Parsed(problems=(InputProblem(where, "report", reason),))
        return dsn_records(report, join) or heuristic_records(report, join)

    return _guarded(where, work)


def parse_arf(data: bytes, where: str, join: Join = _NO_JOIN) -> Parsed:
    """The ``marked_as_spam`` record of one ARF feedback report (RFC 5965); anything
    else is a problem. Never raises."""

    def work() -> Parsed:
        report = Report(data, where)
        parsed = arf_records(report, join)
        if parsed is None:
            kind = report.message.get_content_type()
            reason = (
                "not an ARF feedback report (multipart/report; "
                f"report-type=feedback-report) but {kind}"
            )
            return Parsed(problems=(InputProblem(where, "report", reason),))
        return parsed

    return _guarded(where, work)


def parse_report(data: bytes, where: str, join: Join = _NO_JOIN) -> Parsed:
    """Either: an ARF report's record, else the bounce records of a DSN (or an older
    bounce format). Never raises."""

    def work() -> Parsed:
        report = Report(data, where)
        parsed = arf_records(report, join)
        if parsed is None:
            parsed = dsn_records(report, join) or heuristic_records(report, join)
        return parsed

    return _guarded(where, work)


Parser = Callable[[bytes, str, Join], Parsed]


def parse_path(
    path: str, parse: Parser = parse_report, join: Join = _NO_JOIN
) -> Iterator[tuple[str, Parsed]]:
    """``(location, Parsed)`` for every message in the ``.eml`` file, mbox or Maildir at
    ``path``, in order. Raises :class:`InputError` only when ``path`` cannot be read at
    all; a message that cannot is a problem of its own."""
    for where, data in read_messages(path):
        if isinstance(data, InputProblem):
            yield where, Parsed(problems=(data,))
        else:
            yield where, parse(data, where, join)
