"""How messages are grouped into requests: an immutable, validated value.

Guarantee: every limit is checked on construction, so a batch built within a
:class:`BatchPolicy` never exceeds Segment's (2,500 messages, 500 KB per request).
"""

from __future__ import annotations

from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._limits import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES
from selligent_segment._validate import check_number

__all__ = ["BatchPolicy"]

#: 500,000 bytes, as analytics-go: under Segment's 500 KB whichever way a KB is counted.
DEFAULT_MAX_BYTES = 500_000


def _between(low: float, high: float, *, integer: bool = False) -> Any:
    """An attrs validator: :func:`check_number` within ``[low, high]``, naming the field."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_number(attribute.name, value, minimum=low, maximum=high, integer=integer)

    return check


def _flag(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(attribute.name, f"must be True or False, got {shown(value)}")


@attrs.frozen
class BatchPolicy:
    """Batch limits and linger. Guarantee: a request never exceeds Segment's limits.

    * ``max_messages``: messages per request (2,500, Segment's limit: bytes bind first).
    * ``max_bytes``: bytes per request as sent, envelope included (500,000; at most 500 KiB).
    * ``linger``: how long the first message of an idle tenant waits for company before
      its batch is sent (seconds); a full batch goes at once.
    * ``gzip``: compress request bodies.
    """

    max_messages: int = attrs.field(
        default=MAX_BATCH_MESSAGES, validator=_between(1, MAX_BATCH_MESSAGES, integer=True)
    )
    max_bytes: int = attrs.field(
        default=DEFAULT_MAX_BYTES, validator=_between(33 * 1024, MAX_BATCH_BYTES, integer=True)
    )
    linger: float = attrs.field(default=0.1, validator=_between(0.0, 60.0))
    gzip: bool = attrs.field(default=False, validator=_flag)
