"""Segment's acceptance rules for ``POST /v1/batch``, as pure functions.

One job: given a decoded request (its ``Authorization`` and ``Content-Encoding`` headers and
the body bytes), say what Segment would answer and, item by item, which items it would
accept or drop and why (:func:`read_batch`, then :func:`judge_batch`). The rules themselves
are listed in :class:`~selligent_segment.testing.LocalSegment`'s docstring.

Guarantee: no sockets, no locks, no clock, no state: the same request always gets the same
verdict, so each rule is tested directly (``tests/test_testing_rules.py``) and the server
(``_server.py``) only applies them. What is state stays out: whether a write key is valid
comes in as ``key_ok``, which ``messageId`` was accepted before (deduplication) is
:class:`LocalSegment`'s, and injected faults answer before the rules (``_faults.py``).
"""

from __future__ import annotations

import base64
import binascii
import http
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import orjson

from selligent_segment._limits import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
)
from selligent_segment._limits import MAX_MESSAGE_ID_CHARS as LIMIT_MESSAGE_ID_CHARS

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH_ITEMS",
    "MAX_ITEM_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_REQUEST_BYTES",
    "OK",
    "Answer",
    "BatchRequest",
    "ParseError",
    "Refuse",
    "Verdict",
    "basic_user",
    "decode_body",
    "error_answer",
    "error_body",
    "item_problem",
    "judge_batch",
    "key_from_header",
    "read_batch",
    "reason_phrase",
    "retry_count",
    "status_code_slug",
]

MAX_REQUEST_BYTES = MAX_BATCH_BYTES
"""Largest accepted request body, in bytes after decompression (Segment: 500 KB)."""
MAX_ITEM_BYTES = MAX_MESSAGE_BYTES
"""Largest accepted item, in bytes of its compact orjson serialisation (Segment: 32 KB)."""
MAX_BATCH_ITEMS = MAX_BATCH_MESSAGES
"""Most items per batch; a larger batch is answered 200 and all its events dropped."""
MAX_MESSAGE_ID_CHARS = LIMIT_MESSAGE_ID_CHARS
"""Longest accepted ``messageId``, in characters."""

EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
"""The item ``type`` values Segment accepts."""

Refuse: TypeAlias = Callable[[Mapping[str, Any]], str | None]
"""A test's own rule: the reason to drop an otherwise acceptable item, or None."""


@attrs.frozen
class Answer:
    """An HTTP answer: status, JSON body and extra headers (``Content-Type`` is implied)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def error_body(code: str, message: str) -> bytes:
    """Segment's error body: ``{"code": ..., "message": ...}``."""
    return orjson.dumps({"code": code, "message": message})


def error_answer(
    status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()
) -> Answer:
    """An error answer with Segment's JSON error body."""
    return Answer(status, error_body(code, message), tuple(headers))


OK = Answer(200, b'{"success":true}')
"""Segment's success answer: ``200 {"success": true}``."""


def reason_phrase(status: int) -> str:
    """The standard reason phrase of a status (``Service Unavailable``), or ``""``."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def status_code_slug(status: int) -> str:
    """The error ``code`` for a status: its phrase in snake case (``service_unavailable``),
    ``http_NNN`` for a status without a standard phrase."""
    phrase = reason_phrase(status)
    if not phrase:
        return f"http_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def basic_user(header: str) -> str | None:
    """The user of an HTTP Basic ``Authorization`` header (the write key), or None when the
    header is not Basic, not base64 of UTF-8, or names no user."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def key_from_header(authorization: str | None) -> str | None:
    """The write key an ``Authorization`` header carries (None when absent or unusable)."""
    return basic_user(authorization) if authorization is not None else None


def retry_count(value: str | None) -> int:
    """The ``X-Retry-Count`` header as an int: 0 when absent or not a number."""
    try:
        return int(value if value is not None else "0")
    except ValueError:
        return 0


def _present(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, int) and not isinstance(value, bool)


def item_problem(item: object) -> str | None:
    """Why Segment would drop ``item`` silently, or None when it is acceptable.

    The size of an item is not checked here (:func:`judge_batch` does, as it needs the
    serialisation); the reasons, in the order checked: ``not_an_object``, ``invalid_type``,
    ``missing_message_id``, ``message_id_too_long``, ``missing_event`` (a ``track``),
    ``missing_user_id`` (neither ``userId`` nor ``anonymousId``, a non-empty string or an int).
    """
    if not isinstance(item, dict):
        return "not_an_object"
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        return "invalid_type"
    mid = item.get("messageId")
    if not isinstance(mid, str) or not mid:
        return "missing_message_id"
    if len(mid) > MAX_MESSAGE_ID_CHARS:
        return "message_id_too_long"
    if kind == "track":
        event = item.get("event")
        if not isinstance(event, str) or not event.strip():
            return "missing_event"
    if not _present(item.get("userId")) and not _present(item.get("anonymousId")):
        return "missing_user_id"
    return None


class ParseError(Exception):
    """A body Segment answers ``400``: ``code`` and ``message`` go into the error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_body(raw: bytes, encoding: str | None) -> tuple[Any, int]:
    """The parsed JSON of a body and its size after decompression; raises :class:`ParseError`.

    ``encoding`` is the ``Content-Encoding`` header: ``gzip``/``x-gzip``, or none/``identity``;
    anything else, a body over :data:`MAX_REQUEST_BYTES` (after decompression), bad or
    truncated gzip, or invalid JSON is refused.
    """
    enc = (encoding or "").strip().lower()
    if enc in ("gzip", "x-gzip"):
        decomp = zlib.decompressobj(wbits=31)
        try:
            data = decomp.decompress(raw, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            raise ParseError("invalid_request", "body is not valid gzip") from None
        if len(data) > MAX_REQUEST_BYTES:
            raise ParseError("request_too_large", "request body exceeds 500 KB")
        if not decomp.eof:
            raise ParseError("invalid_request", "gzip body is truncated")
    elif enc in ("", "identity"):
        data = raw
    else:
        raise ParseError("invalid_request", "unsupported Content-Encoding")
    if len(data) > MAX_REQUEST_BYTES:
        raise ParseError("request_too_large", "request body exceeds 500 KB")
    try:
        return orjson.loads(data), len(data)
    except orjson.JSONDecodeError:
        raise ParseError("invalid_request", "body is not valid JSON") from None


@attrs.frozen
class BatchRequest:
    """A ``/v1/batch`` request as decoded by :func:`read_batch`.

    ``write_key`` is the Basic-auth user when an ``Authorization`` header is sent, else the
    body's ``writeKey`` (None when neither gives a non-empty string; never in a repr);
    ``items`` the ``batch`` list, or None when the body is not a JSON object with one, and
    then ``error`` is the ``400`` answer; ``data_len`` the body's size after decompression.
    """

    write_key: str | None = attrs.field(repr=False)
    items: list[Any] | None = attrs.field(eq=False, repr=False)
    data_len: int = 0
    error: Answer | None = None

    @property
    def n_items(self) -> int:
        """How many items the batch has (0 when the body is not a batch)."""
        return len(self.items) if self.items is not None else 0


def read_batch(authorization: str | None, content_encoding: str | None, raw: bytes) -> BatchRequest:
    """Decode a ``/v1/batch`` request: its write key, its items, or why it is refused."""
    doc: Any = None
    data_len = 0
    items: list[Any] | None = None
    error: Answer | None = None
    try:
        doc, data_len = decode_body(raw, content_encoding)
    except ParseError as exc:
        error = error_answer(400, exc.code, exc.message)
    if error is None:
        batch = doc.get("batch") if isinstance(doc, dict) else None
        if isinstance(batch, list):
            items = batch
        else:
            error = error_answer(
                400, "invalid_request", "body must be a JSON object with a 'batch' list"
            )
    key: str | None
    if authorization is not None:
        key = key_from_header(authorization)
    else:
        body_key = doc.get("writeKey") if isinstance(doc, dict) else None
        key = body_key if isinstance(body_key, str) and body_key else None
    return BatchRequest(key, items, data_len, error)


@attrs.frozen
class Verdict:
    """What Segment answers a batch and, when ``200``, why each item is dropped.

    ``reasons`` has one entry per item of a ``200`` answer (``()`` otherwise): None for an
    item to accept (unless its ``messageId`` was accepted before), else the reason it is
    dropped silently.
    """

    answer: Answer
    reasons: tuple[str | None, ...] = ()


def judge_batch(
    request: BatchRequest,
    *,
    key_ok: bool,
    strict: bool = False,
    refuse: Refuse | None = None,
) -> Verdict:
    """Segment's answer to a decoded batch, in the order Segment checks.

    ``401`` when the key is missing or not ``key_ok``; then the request's ``400`` when its
    body is not a batch; then per item: every item dropped (``too_many_items``) when there
    are more than :data:`MAX_BATCH_ITEMS`, else ``too_large`` (over :data:`MAX_ITEM_BYTES`
    re-serialised compactly), else :func:`item_problem`, else ``refuse(item)``. With
    ``strict`` a batch with any item to drop is answered ``400`` naming the first.
    """
    key = request.write_key
    if not key_ok:
        message = "missing write key" if key is None else "invalid or revoked write key"
        return Verdict(error_answer(401, "unauthorized", message))
    items = request.items
    if items is None:
        return Verdict(request.error or error_answer(400, "invalid_request", "invalid body"))
    n_items = len(items)
    too_many = n_items > MAX_BATCH_ITEMS
    reasons: list[str | None]
    if too_many:
        reasons = ["too_many_items"] * n_items
    else:
        # No item can be over the limit when the whole body is not.
        check_size = request.data_len > MAX_ITEM_BYTES
        reasons = []
        for item in items:
            if check_size and len(orjson.dumps(item)) > MAX_ITEM_BYTES:
                reasons.append("too_large")
            else:
                problem = item_problem(item)
                if problem is None and refuse is not None:
                    problem = refuse(item)
                reasons.append(problem)
    if strict:
        bad = next((i for i, r in enumerate(reasons) if r is not None), None)
        if bad is not None:
            message = (
                f"batch has {n_items} items; at most {MAX_BATCH_ITEMS} allowed"
                if too_many
                else f"batch item {bad}: {reasons[bad]}"
            )
            return Verdict(error_answer(400, "invalid_request", message))
    return Verdict(OK, tuple(reasons))
