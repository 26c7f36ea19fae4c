"""Segment's limits and the library's fixed names, written once (see
``shared/reference/segment.md``): everything that checks a size or builds a URL takes
them from here."""

from __future__ import annotations

__all__ = [
    "BATCH_PATH",
    "DEFAULT_TENANT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ID_CHARS",
]

#: Segment's limit on one message (its compact JSON), in bytes: 32 KB.
MAX_MESSAGE_BYTES = 32 * 1024
#: Segment's limit on one request body (uncompressed, envelope included), in bytes: 500 KB.
MAX_BATCH_BYTES = 500 * 1024
#: Segment's limit on messages per request; above it Segment answers 200 and drops them.
MAX_BATCH_MESSAGES = 2500
#: Segment's limit on the length of a ``messageId``.
MAX_MESSAGE_ID_CHARS = 100
#: The path of Segment's batch endpoint, appended to the resolved base URL.
BATCH_PATH = "/v1/batch"
#: The tenant of records that name none (single-write-key setups); it scopes their ids.
DEFAULT_TENANT = "default"
