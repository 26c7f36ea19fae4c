"""The receiver: Segment's Webhooks destination POSTs a customer's events here, and they
are journaled as rows of that customer's Selligent lists before the answer.

An ASGI application (:class:`Receiver`), mountable in Starlette/FastAPI or served alone
(``selligent-segment destination serve``):

- ``POST /segment/{tenant}``: one event (a JSON object) or a batch (an array). A tenant
  with a shared secret requires ``X-Signature`` made with it, or with any one of its
  secrets during a rotation (see :mod:`._signature`): missing or wrong is ``401``; an
  unknown tenant ``404``; neither answer says more.
- ``GET /healthz``: ``200 ok`` while the loader runs, ``503`` once it is closing.

Guarantees: ``200`` only once every event of the request is journaled (mapped rows to
load, refused events as dead letters): a ``kill -9`` right after loses nothing. A body
over ``max_body_bytes``, or an array of more than :data:`MAX_BATCH_EVENTS` events, is
``413``, malformed JSON or a body that is neither object nor
array ``400``, each with its reason (a lone UTF-16 surrogate escape, which
``JSON.stringify`` writes, is not malformed: it is read as U+FFFD); a full spool or an
unwritable journal ``503`` (Segment retries), nothing of the request kept. Each event is
judged alone: one that cannot be mapped (no key value, no messageId, not an object) is
refused on its own, kept as a dead letter with its reason and reported in the answer
(``refused``: index, messageId, reason); skipped ones (loop prevention, not in
``track.events``, a type not loaded) are counted; the rest are kept. Events are
deduplicated per tenant on ``messageId`` over a bounded window of recent ids (Segment
re-sends and re-batches), counted as ``duplicates``; loads are upserts, so a duplicate
past the window updates, never doubles.
Event values and secrets are never in a log line or an answer.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from typing import Any
from urllib.parse import unquote

import attrs
import orjson

from selligent_segment._asgi import (
    DEFAULT_BODY_DEADLINE,
    DEFAULT_MAX_BODIES_BYTES,
    BodiesBusy,
    BodyBudget,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    lifespan,
    read_body,
    respond,
    respond_json,
)
from selligent_segment._errors import SpoolError, SpoolFull, shown
from selligent_segment.destination._array import element_spans
from selligent_segment.destination._config import DestinationConfig, TenantConfig
from selligent_segment.destination._loader import DeadRow, Loader
from selligent_segment.destination._mapping import MappedRow, RowError, map_event
from selligent_segment.destination._rows import dead_payload
from selligent_segment.destination._signature import verify

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_BATCH_EVENTS",
    "TOO_MANY",
    "UNREADABLE",
    "Receiver",
    "RecentIds",
    "Unreadable",
    "parse_lenient",
    "read_json",
]

log = logging.getLogger("selligent_segment.destination")

#: The largest request body accepted (bytes): Segment's largest batch of its largest events,
#: 4,000 (:data:`MAX_BATCH_EVENTS`) of 32 KB (Segment's limit per event) with their commas
#: and brackets, 131,076,001 bytes (125 MiB), rounded up to 128 MiB. A 413 is final for
#: Segment (the batch is lost), so the default must take any batch it may send.
DEFAULT_MAX_BODY_BYTES = 128 * 1024 * 1024
#: The bodies being read at once, by default: two of the largest (or 64 MiB, the library's
#: own default, for a small ``max_body_bytes``). A parsed batch takes a few times its bytes.
BODIES_PER_BUDGET = 2
#: The most events one request may hold: Segment's Webhooks (Actions) destination batches
#: at most 4,000. A larger array is refused whole (413): a small body of junk elements
#: would otherwise cost a refusal, a dead letter and memory for each.
MAX_BATCH_EVENTS = 4_000
#: Recent messageIds remembered per tenant for deduplication (between this and twice it).
DEFAULT_DEDUP_WINDOW = 200_000
_PREFIX = "/segment/"


class RecentIds:
    """The recent messageIds of one tenant: two generations of sets, the older dropped
    when the newer holds ``window`` ids, so memory stays bounded and an id is remembered
    for at least ``window`` later ids."""

    __slots__ = ("new", "old", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.new: set[str] = set()
        self.old: set[str] = set()

    def __contains__(self, message_id: object) -> bool:
        key = _kept(message_id) if isinstance(message_id, str) else message_id
        return key in self.new or key in self.old

    def add(self, message_id: str) -> None:
        """Remember ``message_id`` (one over :data:`_LONGEST_KEPT` characters by its
        SHA-256: a window of long ids must not hold gigabytes)."""
        if len(self.new) >= self.window:
            self.old, self.new = self.new, set()
        self.new.add(_kept(message_id))


#: Longer messageIds are remembered by their SHA-256 (Segment's own are 100 at most).
_LONGEST_KEPT = 100


def _kept(message_id: str) -> str:
    if len(message_id) <= _LONGEST_KEPT:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest


def _answer(status: int, reason: str) -> bytes:
    return orjson.dumps({"error": reason}) if status >= 400 else b""


class Receiver:
    """The ASGI application of the destination's webhook; see the module. ``config``
    names the tenants (secrets read once, here), ``loader`` journals what is accepted.
    A body is at most ``max_body_bytes`` (128 MiB; 413 past it), the bodies being read at
    once at most ``max_bodies_bytes`` together (by default twice ``max_body_bytes``,
    256 MiB, or 64 MiB when that is more; never less than ``max_body_bytes``; 503 past
    it), and a body must arrive whole within ``body_deadline`` seconds (30; 408 past it):
    unfinished bodies cannot pile up in memory. Mountable under a prefix (``root_path``)."""

    def __init__(
        self,
        config: DestinationConfig,
        loader: Loader,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        max_bodies_bytes: int | None = None,
        body_deadline: float = DEFAULT_BODY_DEADLINE,
    ) -> None:
        if max_bodies_bytes is None:
            max_bodies_bytes = max(DEFAULT_MAX_BODIES_BYTES, BODIES_PER_BUDGET * max_body_bytes)
        self.bodies = BodyBudget.for_bodies(max_bodies_bytes, max_body_bytes, "max_body_bytes")
        self.config = config
        self.loader = loader
        self.max_body_bytes = max_body_bytes
        self.body_deadline = body_deadline
        self._secrets: dict[str, tuple[bytes, ...] | None] = {
            name: tenant.shared_secrets() for name, tenant in config.tenants.items()
        }
        self._recent = {name: RecentIds(dedup_window) for name in config.tenants}
        self.closing = False

    def __repr__(self) -> str:
        return f"<Receiver tenants={list(self.config.tenants)}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):  # mounted under a prefix
            inner = path[len(root) :]
            if inner == "/healthz" or inner.startswith(_PREFIX):  # else given relative already
                path = inner
        method: str = scope.get("method", "GET")
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                await respond(send, 405, b"method not allowed", headers=[("Allow", "GET")])
            elif self.closing:
                await respond(send, 503, b"closing")
            else:
                await respond(send, 200, b"ok")
            return
        if not path.startswith(_PREFIX) or "/" in path[len(_PREFIX) :]:
            await respond_json(send, 404, _answer(404, "not found"))
            return
        if method != "POST":
            await respond(send, 405, b"method not allowed", headers=[("Allow", "POST")])
            return
        name = unquote(path[len(_PREFIX) :])
        tenant = self.config.tenants.get(name)
        if tenant is None:
            await respond_json(send, 404, _answer(404, "unknown tenant"))
            return
        try:
            body = await read_body(
                receive, self.max_body_bytes, budget=self.bodies, deadline=self.body_deadline
            )
        except BodyTooLarge as exc:
            await respond_json(send, 413, _answer(413, str(exc)))
            return
        except BodiesBusy:
            await respond_json(
                send, 503, _answer(503, "too many requests being read at once; try again")
            )
            return
        except BodyTimeout:
            reason = f"the request body did not arrive within {self.body_deadline:g} s"
            await respond_json(send, 408, _answer(408, reason))
            return
        except ClientGone:
            return
        try:
            status, answer = self.handle(tenant, body, header(scope, "x-signature"))
        finally:
            self.bodies.give(len(body))
        await respond_json(send, status, answer)

    def handle(self, tenant: TenantConfig, body: bytes, signature: str | None) -> tuple[int, bytes]:
        """Judge, journal and answer one request's ``body`` for ``tenant``: the status
        and the JSON answer. Synchronous: from parsing to journaling nothing else runs in
        between, so deduplication needs no lock."""
        data, error = read_fast(body)
        secrets = self._secrets.get(tenant.name)
        if secrets is not None:  # before any slower reading: an unsigned body costs little
            first = data[0] if isinstance(data, list) and data else None
            whole = tenant.whole_body_signature
            if not verify(secrets, body, signature, first, whole_body=whole):
                return 401, _answer(401, "signature refused")
        if data is _SLOW:
            data = read_slowly(body)
        reason = f"malformed JSON: {error}"
        if data is _BAD:
            return 400, _answer(400, reason)
        if isinstance(data, dict):
            events: list[Any] = [data]
        elif data is TOO_MANY:  # each would cost a refusal, a dead letter, memory
            return 413, _answer(
                413, f"at most {MAX_BATCH_EVENTS:,} events in one request (Segment's batch)"
            )
        elif isinstance(data, list):
            events = data
        else:
            return 400, _answer(400, "the body must be an event (object) or an array of events")
        return self._accept(tenant, events)

    def _accept(self, tenant: TenantConfig, events: list[Any]) -> tuple[int, bytes]:
        recent = self._recent[tenant.name]
        rows: list[MappedRow] = []
        dead: list[DeadRow] = []
        refused: list[dict[str, Any]] = []
        ids: list[str] = []
        in_request: set[str] = set()
        duplicates = skipped = 0
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                reason = "not a JSON object"
                if isinstance(event, Unreadable):
                    reason, event = event.reason, event.text
                refused.append({"index": index, "messageId": None, "reason": reason})
                payload = dead_payload(tenant.name, None, None, reason, event)
                dead.append(DeadRow(tenant.name, "unknown", "", payload, reason))
                continue
            message_id = event.get("messageId")
            if isinstance(message_id, str) and message_id:
                if message_id in recent or message_id in in_request:
                    duplicates += 1
                    continue
                in_request.add(message_id)
            try:
                result = map_event(tenant, event)
            except RowError as exc:
                reason = str(exc)
                kind = event.get("type")
                mid = message_id if isinstance(message_id, str) else ""
                refused.append({"index": index, "messageId": mid or None, "reason": reason})
                payload = dead_payload(tenant.name, kind, mid, reason, event)
                dead.append(DeadRow(tenant.name, _kind(kind), mid, payload, reason))
                if mid:
                    ids.append(mid)
                continue
            if isinstance(result, MappedRow):
                rows.append(result)
                ids.append(result.message_id)
            else:
                skipped += 1
        try:
            self.loader.accept(rows, dead)
        except SpoolFull as exc:
            log.error("tenant %s: refused a request: %s", shown(tenant.name), exc)
            return 503, _answer(503, "the spool is full; try again later")
        except SpoolError as exc:
            log.error("tenant %s: refused a request: %s", shown(tenant.name), exc)
            return 503, _answer(503, "the spool cannot be written; try again later")
        for message_id in ids:
            recent.add(message_id)
        if refused:
            first = refused[0]
            mid = first["messageId"]
            log.warning(
                "tenant %s: %d of %d events refused (first: event %d, messageId %s: %s)",
                shown(tenant.name),
                len(refused),
                len(events),
                first["index"],
                "none" if mid is None else shown(mid),
                first["reason"],
            )
        answer: dict[str, Any] = {
            "accepted": len(rows),
            "duplicates": duplicates,
            "skipped": skipped,
            "refused": refused,
        }
        return 200, orjson.dumps(answer)


_BAD: Any = object()
_SLOW: Any = object()  # orjson refused it: the slower readers are still to try
UNREADABLE: Any = _BAD
"""What :func:`read_json` gives for a body that no parser here reads."""
TOO_MANY: Any = object()
"""What :func:`read_json` gives for an array over its limit that orjson refused (read no
further: each element read on its own would cost the event loop seconds)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (math.inf, -math.inf):
        raise ValueError("a number out of range")
    return number


@attrs.frozen
class Unreadable:
    """One element of an array body that no parser here reads: its text (invalid
    UTF-8 replaced) and why."""

    text: str
    reason: str


def read_json(body: bytes, limit: int | None = MAX_BATCH_EVENTS) -> tuple[Any, str]:
    """``body`` read as the receiver reads it, and orjson's complaint ("" when it had
    none): orjson, else :func:`parse_lenient` (a lone surrogate escape, as
    ``JSON.stringify`` writes), else :func:`parse_elements` (an array whose elements are
    read one by one, one that neither reads an :class:`Unreadable`: refused alone).
    :data:`UNREADABLE` when nothing reads it; :data:`TOO_MANY` for an array of more than
    ``limit`` elements (None: no limit), before either slower reading."""
    data, error = read_fast(body, limit)
    return (read_slowly(body, limit) if data is _SLOW else data), error


def read_fast(body: bytes, limit: int | None = MAX_BATCH_EVENTS) -> tuple[Any, str]:
    """The first step of :func:`read_json`, orjson's: its value (or :data:`TOO_MANY`)
    and "", or ``_SLOW`` and orjson's complaint, for :func:`read_slowly` to go on with.
    (The receiver checks a signature in between: an unsigned body costs no slow read.)"""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _SLOW, str(exc)
    too_many = limit is not None and isinstance(data, list) and len(data) > limit
    return (TOO_MANY if too_many else data), ""


def read_slowly(body: bytes, limit: int | None = MAX_BATCH_EVENTS) -> Any:
    """The rest of :func:`read_json`, for a body orjson refused."""
    if limit is not None and _more_elements_than(body, limit):
        return TOO_MANY
    data = parse_lenient(body)
    return parse_elements(body) if data is _BAD else data


def _more_elements_than(body: bytes, limit: int) -> bool:
    """Whether the array ``body`` has more than ``limit`` elements, scanning no further
    than the one past it (False for a body that is no array)."""
    try:
        return sum(1 for _ in itertools.islice(element_spans(body), limit + 1)) > limit
    except ValueError:  # broken before that: the slower readers say how
        return False


def parse_elements(body: bytes) -> Any:
    """The elements of an array ``body`` that orjson and :func:`parse_lenient` refuse
    as a whole, each read on its own: the value, or an :class:`Unreadable` for one that
    neither reads (nested deeper than 1,024 levels, ``NaN``, invalid UTF-8), so that
    one bad event costs no other. ``_BAD`` when the array itself is broken (see
    :func:`element_spans`)."""
    try:
        spans = list(element_spans(body))
    except ValueError:
        return _BAD
    values: list[Any] = []
    for start, end in spans:
        raw = body[start:end]
        try:
            values.append(orjson.loads(raw))
            continue
        except orjson.JSONDecodeError as exc:
            reason = f"malformed JSON: {exc}"
        value = parse_lenient(raw)
        if value is _BAD:
            value = Unreadable(raw.decode("utf-8", "replace"), reason)
        values.append(value)
    return values


def parse_lenient(body: bytes) -> Any:
    """``body`` (strict UTF-8 JSON) read by the standard library, for a body orjson
    refuses: in practice one with a lone UTF-16 surrogate escape (``"\\ud83d"``, which
    ``JSON.stringify`` writes), each lone surrogate, in keys and values, replaced by
    U+FFFD as a UTF-8 encoder does, so everything downstream can write the result.
    ``_BAD`` for a body that is not JSON this way either (NaN, infinities and invalid
    UTF-8 included)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _BAD
    return _without_surrogates(data)


def _replaced(value: Any) -> Any:
    return _SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value


def _without_surrogates(data: Any) -> Any:
    """``data`` with every surrogate code point in its strings replaced by U+FFFD (a
    surrogate pair is already one code point here); containers rewritten in place,
    iteratively (any depth)."""
    if not isinstance(data, (dict, list)):
        return _replaced(data)
    stack: list[dict[str, Any] | list[Any]] = [data]
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            items = list(container.items())
            container.clear()
            for key, value in items:
                container[_replaced(key)] = _replaced(value)
                if isinstance(value, (dict, list)):
                    stack.append(value)
        else:
            for index, value in enumerate(container):
                if isinstance(value, (dict, list)):
                    stack.append(value)
                else:
                    container[index] = _replaced(value)
    return data


def _kind(kind: object) -> str:
    return kind if isinstance(kind, str) and len(kind) <= 40 else "unknown"
