"""selligent-segment: email callbacks to Segment Email track events."""

from selligent_segment._clock import Clock
from selligent_segment._config import EmitterConfig
from selligent_segment._emitter import Emitter
from selligent_segment._errors import (
    ConfigurationError,
    EmitterClosed,
    InvalidEvent,
    SelligentSegmentError,
    SpoolError,
    SpoolFull,
    UnknownTenant,
)
from selligent_segment._keys_file import WriteKeysFileError, load_write_keys
from selligent_segment._mapping import (
    EncodedMessage,
    encode,
    message_id,
    profile_message,
    track_message,
)
from selligent_segment._naming import PROFILES, EventNaming
from selligent_segment._profile import ProfileUpdates
from selligent_segment._record import CallbackRecord, EventKind
from selligent_segment._results import BulkResult, DeliveryFailure, FailureReason
from selligent_segment._version import __version__
from selligent_segment.delivery._aside import AsidePolicy
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._keys import KeyResolver
from selligent_segment.delivery._retry import Outcome, RetryPolicy
from selligent_segment.delivery._stats import LastError, Stats, TenantStats
from selligent_segment.delivery._transport import HttpTransport, Response, Transport
from selligent_segment.spool._file import DeadLetter, SpoolFile, SpoolStatus, TenantBacklog
from selligent_segment.spool._protocol import OnFull

__all__ = [
    "PROFILES",
    "AsidePolicy",
    "BatchPolicy",
    "BulkResult",
    "CallbackRecord",
    "Clock",
    "ConfigurationError",
    "DeadLetter",
    "DeliveryFailure",
    "Emitter",
    "EmitterClosed",
    "EmitterConfig",
    "EncodedMessage",
    "EventKind",
    "EventNaming",
    "FailureReason",
    "HttpTransport",
    "InvalidEvent",
    "KeyResolver",
    "LastError",
    "OnFull",
    "Outcome",
    "ProfileUpdates",
    "Response",
    "RetryPolicy",
    "SelligentSegmentError",
    "SpoolError",
    "SpoolFile",
    "SpoolFull",
    "SpoolStatus",
    "Stats",
    "TenantBacklog",
    "TenantStats",
    "Transport",
    "UnknownTenant",
    "WriteKeysFileError",
    "__version__",
    "encode",
    "load_write_keys",
    "message_id",
    "profile_message",
    "track_message",
]
