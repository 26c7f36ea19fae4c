"""Bounce and complaint reports: RFC 3464 delivery status notifications (and, with the
``bounces`` extra, older bounce formats) and RFC 5965 ARF feedback-loop reports, from
``.eml`` files, mboxes and Maildirs, turned into ``bounced`` and ``marked_as_spam``
callback records joined back to the platform's sends through a :class:`Join`.

Guarantees: the parse functions never raise on any message (every problem is an
:class:`~selligent_segment.inputs.InputProblem` naming ``FILE`` or ``FILE:MESSAGE-N``, the
field and the reason); the same report and recipient always give the same ``event_id``,
so ingesting a mailbox twice sends each event's ``messageId`` twice, which Segment
deduplicates.
"""

from __future__ import annotations

from selligent_segment.inputs.reports._join import (
    PROTECTED_FIELDS,
    Join,
    JoinKey,
    Resolver,
    table_resolver,
)
from selligent_segment.inputs.reports._parse import parse_arf, parse_dsn, parse_path, parse_report
from selligent_segment.inputs.reports._sources import read_messages
from selligent_segment.inputs.reports._status import SOFT_PERMANENT, bounce_type

__all__ = [
    "PROTECTED_FIELDS",
    "SOFT_PERMANENT",
    "Join",
    "JoinKey",
    "Resolver",
    "bounce_type",
    "parse_arf",
    "parse_dsn",
    "parse_path",
    "parse_report",
    "read_messages",
    "table_resolver",
]
