"""selligent-segment: email callbacks to Segment Email track events."""

from selligent_segment._errors import (
    ConfigurationError,
    EmitterClosed,
    InvalidEvent,
    SelligentSegmentError,
    SpoolFull,
    UnknownTenant,
)
from selligent_segment._mapping import EncodedMessage, encode, message_id, track_message
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment._record import CallbackRecord, EventKind
from selligent_segment._version import __version__

__all__ = [
    "PROFILES",
    "CallbackRecord",
    "ConfigurationError",
    "EmitterClosed",
    "EncodedMessage",
    "EventKind",
    "EventNaming",
    "InvalidEvent",
    "SelligentSegmentError",
    "SpoolFull",
    "UnknownTenant",
    "__version__",
    "encode",
    "message_id",
    "track_message",
]
