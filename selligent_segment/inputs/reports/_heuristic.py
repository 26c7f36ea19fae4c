"""Bounces in the formats that predate RFC 3464 (qmail, old Exim and Exchange, ...), read
by ``flufl.bounce`` (Apache-2.0; the optional extra ``bounces``, imported only when such a
message comes). It gives only the failed addresses: the records say
``bounce_confidence: heuristic``, are ``hard`` unless a code next to the address says
otherwise, and carry no ``smtp_status`` unless the text next to the address holds one.
What it calls temporary failures are delays (a delay warning, a DSN's ``Action:
delayed``): not bounces, they make no record and no problem, as in an RFC 3464 report.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import attrs

from selligent_segment.inputs._result import InputProblem, Parsed
from selligent_segment.inputs.reports._join import Join
from selligent_segment.inputs.reports._message import Report, make_record
from selligent_segment.inputs.reports._status import basic_code_in, bounce_type, status_in

__all__ = ["heuristic_records"]

_BOUNCED = "bounced"
_MISSING = (
    "not an RFC 3464 delivery status notification; install the 'bounces' extra "
    "(pip install 'selligent-segment[bounces]') to read older bounce formats"
)
_NONE_FOUND = "not an RFC 3464 delivery status notification, and no bounce recognised in it"
_MAX_REASON = 500
_INLINE_ID = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)

Detector = Callable[[Any], "tuple[frozenset[bytes], frozenset[bytes]]"]
_detector: list[Detector | None] = []


def _all_failures() -> Detector | None:
    """flufl.bounce's ``all_failures``, imported once; None when it is not installed."""
    if not _detector:
        try:
            module = importlib.import_module("flufl.bounce")
        except ImportError:
            _detector.append(None)
        else:
            _detector.append(module.all_failures)
    return _detector[0]


def _text_of(report: Report) -> str:
    chunks = []
    for part in report.parts():
        if part.get_content_maintype() == "text":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                chunks.append(raw.decode("utf-8", "replace"))
    return "\n".join(chunks)


def _near(text: str, address: str) -> tuple[str | None, str | None]:
    """The status code and the reason next to ``address`` in ``text``: the lines after
    the address's own line, up to a blank line (qmail's and Yahoo's layout). The code is
    looked for in that line and that paragraph only, never in the next address's."""
    at = text.lower().find(address.lower())
    if at < 0:
        return None, None
    end = text.find("\n", at)
    line = text[at:end] if end >= 0 else text[at:]
    following = text[end + 1 :] if end >= 0 else ""
    paragraph = following.lstrip("\n").split("\n\n", 1)[0]
    reason = " ".join(paragraph.split())[:_MAX_REASON] or None
    return status_in(f"{line}\n{paragraph}"), reason


def heuristic_records(report: Report, join: Join) -> Parsed:
    """The records flufl.bounce finds in a non-RFC bounce, or a problem saying why none."""
    detect = _all_failures()
    if detect is None:
        return Parsed(problems=(InputProblem(report.where, "report", _MISSING),))
    try:
        temporary, permanent = detect(report.message)
    except Exception as exc:  # a detector that fails on odd input
        reason = f"the bounce detectors failed on it ({type(exc).__name__})"
        return Parsed(problems=(InputProblem(report.where, "report", reason),))
    failures = [(a, "hard") for a in sorted(permanent)]
    if not failures:
        if temporary:  # only delays: the message will still be delivered or bounce later
            return Parsed()
        return Parsed(problems=(InputProblem(report.where, "report", _NONE_FOUND),))
    text = _text_of(report)
    original_id = report.original_header("Message-ID")
    if original_id is None:
        own = report.message.get("Message-ID")
        inline = [m for m in _INLINE_ID.findall(text) if m != own]
        original_id = inline[0] if inline else None
    parsed = Parsed()
    for number, (raw, kind) in enumerate(failures, 1):
        label = f"{report.where} recipient {number}" if len(failures) > 1 else report.where
        address = raw.decode("utf-8", "replace")
        properties: dict[str, Any] = {"bounce_confidence": "heuristic"}
        if original_id is not None:
            properties["original_message_id"] = original_id
        fields: dict[str, Any] = {
            "type": _BOUNCED,
            "email": address,
            "bounce_type": kind,
            "event_id": report.event_id(_BOUNCED, address.lower()),
            "properties": properties,
        }
        status, said = _near(text, address)
        status = status or basic_code_in(said)
        if said is not None:
            fields["bounce_reason"] = said
        if status is not None:
            fields["smtp_status"] = status
            fields["bounce_type"] = bounce_type(status) or kind
        moment = report.date()
        if moment is not None:
            fields["timestamp"] = moment
        key = report.join_key(join, address, _BOUNCED)
        if key.message_id is None and original_id is not None:
            key = attrs.evolve(key, message_id=original_id.strip("<>"))
        parsed += make_record(report, label, fields, join, key)
    return parsed
