"""Segment's webhook signature: ``X-Signature`` = hex HMAC-SHA1(shared secret, body).

One job: :func:`verify` says whether a request's signature is right for its body, in the
two forms Segment sends: the whole body (the classic Webhooks destination, and Actions
without batching), and, for a JSON array, the signature of the first element alone, as
Segment's batching serialises it (``JSON.stringify``: compact, keys in order, non-ASCII
as is). For that second form the first element's exact bytes in the body are tried (a
body built by ``JSON.stringify`` of the array holds them verbatim), and the element
re-serialised compactly (integral floats written as integers, as JavaScript does); when
the caller has the first element parsed, that compact form is tried before anything else
(it signs Segment's batches, and costs one small HMAC instead of hashing and decoding
the whole body: the forms accepted are the same whatever the order).

Several secrets may be given (a rotation: the old and the new); each form is then tried
with every secret, so a body is hashed once per secret, not once per secret and form.

Guarantees: every comparison is :func:`hmac.compare_digest` (constant time); the secrets
and the expected digests are never logged, returned or put in an exception.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

from selligent_segment.destination._array import element_spans

__all__ = ["FIRST_ELEMENT_BYTES", "first_element", "sign", "verify"]


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA1 of ``body`` with ``secret``."""
    return hmac.new(secret, body, hashlib.sha1).hexdigest()


#: How far into a body its first element is looked for: twice Segment's largest event
#: (32 KB), so that a body whose first element is huge (or never ends) costs a scan of
#: this much, not of the whole body, before its signature is refused.
FIRST_ELEMENT_BYTES = 64 * 1024


def first_element(body: bytes) -> bytes | None:
    """The exact bytes of the first element of a JSON array ``body``, or None when the
    body is not an array with a first element ending (with its comma or the closing
    ``]``) within its first :data:`FIRST_ELEMENT_BYTES`."""
    try:
        start, end = next(element_spans(body[:FIRST_ELEMENT_BYTES]))
    except (StopIteration, ValueError):
        return None
    return body[start:end]


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def _signed(given: bytes, secrets: Sequence[bytes], data: bytes) -> bool:
    """True when ``given`` is the signature of ``data`` with one of ``secrets``."""
    return any(hmac.compare_digest(given, sign(secret, data).encode()) for secret in secrets)


def _signs(given: bytes, secrets: Sequence[bytes], first: Any) -> bool:
    """True when ``given`` signs ``first`` re-serialised compactly; False, never an
    exception, when it cannot be (nested deeper than orjson writes, an integer beyond
    64 bits): the other forms are tried on the body's own bytes."""
    try:
        compact = orjson.dumps(_js_numbers(first))
    except (orjson.JSONEncodeError, RecursionError):
        return False
    return _signed(given, secrets, compact)


def verify(
    secret: bytes | Sequence[bytes],
    body: bytes,
    signature: str | None,
    first: Any = None,
    *,
    whole_body: bool = False,
) -> bool:
    """True when ``signature`` (the ``X-Signature`` header) signs ``body`` or, for an
    array, its first element (``first``, already parsed, if the caller has it), with
    ``secret`` or one of several; with ``whole_body``, only when it signs ``body``."""
    if not signature:
        return False
    secrets = (secret,) if isinstance(secret, bytes) else tuple(secret)
    given = signature.strip().lower().encode("ascii", "replace")
    if whole_body:
        return _signed(given, secrets, body)
    if first is not None and _signs(given, secrets, first):  # Segment's batches: cheapest
        return True
    if _signed(given, secrets, body):
        return True
    raw = first_element(body)
    if raw is None:
        return False
    if _signed(given, secrets, raw):
        return True
    if first is not None:
        return False  # its compact form was tried first
    try:
        first = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return _signs(given, secrets, first)
