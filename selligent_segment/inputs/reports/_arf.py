"""Feedback-loop reports (ARF, RFC 5965): one ``marked_as_spam`` record per report.

Feedback types ``abuse``, ``fraud``, ``virus``, ``other`` and unknown extensions are
complaints; ``not-spam`` (the user took it out of spam) and ``auth-failure`` (RFC 6591, an
authentication report, not a person's complaint) make no record. A redacted recipient
(``redacted@...``, ``xxxx@...``, ``****@...``) counts as absent: the record then needs the
resolver (through the platform's header, the VERP token or the Message-ID) to give it an
``email`` or a ``user_id``.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from selligent_segment.inputs._result import InputProblem, Parsed
from selligent_segment.inputs.reports._join import Join
from selligent_segment.inputs.reports._message import (
    Report,
    address_of,
    blocks,
    clipped,
    header_text,
    make_record,
    without_comments,
)

__all__ = ["NOT_COMPLAINTS", "arf_records"]

#: Feedback types that are not a person's complaint: no record.
NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})
_SPAM = "marked_as_spam"
_REDACTED = re.compile(r"^(\[?redacted\]?|x+|\*+|-+|_+|#+|0+)$", re.IGNORECASE)
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _unredacted(address: str | None) -> str | None:
    if address is None:
        return None
    local = address.rpartition("@")[0]
    return None if not local or _REDACTED.match(local) else address


def _fields(part: Message) -> Message:
    """The fields of a ``message/feedback-report`` part: one block, or the blocks a blank
    or whitespace-only line split it into, joined (the first of a field wins on ``get``)."""
    found = blocks(part)
    fields = found[0] if found else Message()
    for block in found[1:]:
        for name, value in block.raw_items():
            fields[name] = value
    return fields


def arf_records(report: Report, join: Join) -> Parsed | None:
    """The record of an ARF report (or none for a non-complaint), or None when
    ``report`` is not one."""
    if report.report_type() != "feedback-report":
        return None
    where = report.where
    part = report.report_part("message/feedback-report")
    if part is None:
        reason = "a feedback-report without its message/feedback-report part"
        return Parsed(problems=(InputProblem(where, "report", reason),))
    fields_block = _fields(part)
    feedback = without_comments(header_text(fields_block.get("Feedback-Type")) or "").lower()
    if not feedback:
        return Parsed(problems=(InputProblem(where, "Feedback-Type", "missing"),))
    if not _TOKEN.match(feedback):
        reason = f"not a feedback type: {feedback[:40]!r}"
        return Parsed(problems=(InputProblem(where, "Feedback-Type", reason),))
    if feedback in NOT_COMPLAINTS:
        return Parsed()
    recipient = _unredacted(address_of(header_text(fields_block.get("Original-Rcpt-To"))))
    if recipient is None:
        to = report.original_header("To")
        if to is not None and to.count("@") == 1:
            recipient = _unredacted(address_of(to))
    properties: dict[str, Any] = {"feedback_type": feedback}
    agent = header_text(fields_block.get("User-Agent"))
    if agent is not None:
        properties["feedback_user_agent"] = agent
    reporting = header_text(fields_block.get("Reporting-MTA"))
    if reporting is not None:
        properties["reporting_mta"] = reporting.partition(";")[2].strip() or reporting
    original_id = report.original_header("Message-ID")
    if original_id is not None:
        properties["original_message_id"] = original_id
    fields: dict[str, Any] = {"type": _SPAM, "properties": properties}
    if recipient is not None:
        fields["email"] = recipient
    subject = clipped(report.original_header("Subject"))
    if subject is not None:
        fields["email_subject"] = subject
    moment = report.date()
    if moment is not None:
        fields["timestamp"] = moment
    fields["event_id"] = report.event_id(_SPAM, (recipient or "").lower())
    envelope = (header_text(fields_block.get("Original-Mail-From")) or "",)
    key = report.join_key(join, recipient, _SPAM, envelope)
    parsed = make_record(report, where, fields, join, key)
    if parsed.problems and parsed.problems[0].field == "email" and recipient is None:
        reason = (
            "the recipient is redacted or absent and the resolver gave no email or user_id "
            "(join through the platform's header, a VERP token or the Message-ID)"
        )
        return Parsed(problems=(InputProblem(where, "Original-Rcpt-To", reason),))
    return parsed
