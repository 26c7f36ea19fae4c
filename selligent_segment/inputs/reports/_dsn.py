"""Delivery status notifications (RFC 3464): one ``bounced`` record per failed recipient.

``Action: failed`` is a bounce; ``delayed``, ``delivered``, ``relayed`` and ``expanded``
are not (no record, no problem). The bounce type comes from the ``Status`` code (see
``_status.py``), or from the diagnostic's codes when ``Status`` is missing or generic
(``5.0.0``, as Exim writes it); without any code the type is left out (undetermined).
"""

from __future__ import annotations

from email.message import Message
from typing import Any

from selligent_segment._errors import shown
from selligent_segment.inputs._result import InputProblem, Parsed
from selligent_segment.inputs.reports._join import Join
from selligent_segment.inputs.reports._message import (
    Report,
    address_of,
    blocks,
    clipped,
    date_of,
    header_text,
    make_record,
    typed_value,
    without_comments,
)
from selligent_segment.inputs.reports._status import basic_code_in, bounce_type, status_in

__all__ = ["dsn_records"]

_NOT_BOUNCES = frozenset({"delayed", "delivered", "relayed", "expanded"})
_BOUNCED = "bounced"
#: Fields only a per-recipient block has: a first block with one is a recipient's.
_RECIPIENT_FIELDS = ("Final-Recipient", "Original-Recipient", "Action", "Status")


def _status(block: Message, diagnostic: str | None) -> str | None:
    """The most specific code: ``Status``, unless generic (x.0.0) and the diagnostic has a
    more specific one; then the diagnostic's enhanced code, then its basic code."""
    status = status_in(header_text(block.get("Status")))
    detailed = status_in(diagnostic)
    generic = status is None or status.endswith(".0.0")
    if detailed is not None and generic and (status is None or status[0] == detailed[0]):
        return detailed
    return status or basic_code_in(diagnostic)


def _host(value: str | None) -> str | None:
    """An MTA name without its comment and trailing dot (``mx.example.com. (...)``)."""
    if value is None:
        return None
    return without_comments(value).rstrip(".") or None


def _recipient_fields(report: Report, block: Message, per_message: Message) -> dict[str, Any]:
    diagnostic = typed_value(header_text(block.get("Diagnostic-Code")))
    status = _status(block, diagnostic)
    fields: dict[str, Any] = {"type": _BOUNCED}
    kind = bounce_type(status)
    if kind is not None:
        fields["bounce_type"] = kind
    if status is not None:
        fields["smtp_status"] = status
    if diagnostic is not None:
        fields["bounce_reason"] = clipped(diagnostic)
    moment = date_of(header_text(block.get("Last-Attempt-Date"))) or report.date()
    if moment is not None:
        fields["timestamp"] = moment
    properties: dict[str, Any] = {"bounce_confidence": "dsn"}
    remote = _host(typed_value(header_text(block.get("Remote-MTA"))))
    if remote is not None:
        properties["remote_mta"] = remote
    reporting = typed_value(header_text(per_message.get("Reporting-MTA")))
    if reporting is not None:
        properties["reporting_mta"] = reporting
    original_id = report.original_header("Message-ID")
    if original_id is not None:
        properties["original_message_id"] = original_id
    fields["properties"] = properties
    subject = clipped(report.original_header("Subject"))
    if subject is not None:
        fields["email_subject"] = subject
    return fields


def _names_a_recipient(block: Message) -> bool:
    """True when ``block`` holds a per-recipient field (RFC 3464 section 2.3)."""
    return any(block.get(name) is not None for name in _RECIPIENT_FIELDS)


_STATUS_KINDS = (
    "message/delivery-status",
    "message/global-delivery-status",
    "text/delivery-status",
)


def dsn_records(report: Report, join: Join) -> Parsed | None:
    """The records of an RFC 3464 report, or None when ``report`` is not one."""
    if report.report_type() != "delivery-status":
        return None
    part = None
    # RFC 6533 names it message/global-delivery-status for an SMTPUTF8 message; some MTAs
    # label it text/delivery-status.
    for kind in _STATUS_KINDS:
        part = report.report_part(kind)
        if part is not None:
            break
    where = report.where
    if part is None:
        reason = "a delivery-status report without its message/delivery-status part"
        return Parsed(problems=(InputProblem(where, "report", reason),))
    found = blocks(part)
    per_message = found[0] if found else Message()
    # The per-message block comes first; a first block naming a recipient is that
    # recipient's (the per-message block missing, or merged into it).
    recipients = found if _names_a_recipient(per_message) else found[1:]
    if not recipients:
        reason = "no per-recipient block (Final-Recipient, Action, Status)"
        return Parsed(problems=(InputProblem(where, "message/delivery-status", reason),))
    parsed = Parsed()
    for number, block in enumerate(recipients, 1):
        label = f"{where} recipient {number}" if len(recipients) > 1 else where
        action = (header_text(block.get("Action")) or "").lower().split(" ")[0]
        if action in _NOT_BOUNCES:
            continue
        status_text = header_text(block.get("Status"))
        lenient = not action and (status_text or "").startswith(("4", "5"))
        if action != "failed" and not lenient:  # lenient: no Action, a failure Status
            shown_action = shown(action) if action else "missing"
            reason = f"{shown_action}: expected failed, delayed, delivered, relayed or expanded"
            parsed += Parsed(problems=(InputProblem(label, "Action", reason),))
            continue
        original = address_of(header_text(block.get("Original-Recipient")))
        final = address_of(header_text(block.get("Final-Recipient")))
        recipient = original or final
        if recipient is None:
            reason = "missing: no Final-Recipient or Original-Recipient address"
            parsed += Parsed(problems=(InputProblem(label, "Final-Recipient", reason),))
            continue
        fields = _recipient_fields(report, block, per_message)
        fields["email"] = recipient
        fields["event_id"] = report.event_id(_BOUNCED, recipient.lower())
        key = report.join_key(join, recipient, _BOUNCED)
        parsed += make_record(report, label, fields, join, key)
    return parsed
