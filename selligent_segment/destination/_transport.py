"""One sender's turn against Selligent Marketing Cloud: a leased batch of rows posted as
``data/load`` requests, and what came of each row.

One job: group the leased rows of one tenant by (list, ``keyFields``, columns), identify
rows first (a new contact exists before its interactions; rows of one list and key whose
columns differ still load in the order they came, see :func:`_in_key_order`), post each
group as one
``POST {base}/Portal/Api/organizations/{org}/lists/{list}/data/load`` with ``keyFields``,
``fields`` (so every body row is a data row and ``record_index`` is unambiguous) and
``data_import_option=InsertAndUpdate`` (a replayed row updates, never duplicates), and
report one :class:`~selligent_segment.delivery._transport.Response` for the whole turn.

Guarantees (what the dispatcher then does with them):

- a row listed in a 200's ``invalid_records`` is refused on its own with Selligent's
  reason (``field: message (code)``); the others of its request are delivered after a
  ``Succeeded`` or ``PartiallySucceeded``, and go again (a retry, as after a 503) after a
  ``Failed``, ``ValidationFailed`` or ``NotFound``, which did not write them (an upsert:
  a row written after all is only updated);
- a group refused as a whole for what it is (400, 404, 405, 422, a 3xx) refuses its
  rows with Selligent's ``errors`` text, and the next group is still sent; a 413 (the
  request too large, nothing said of its rows) ends the turn refused as a whole, no row
  refused on its own, and the dispatcher bisects the rest of the batch;
- the first 401/403, 429 or retryable failure (5xx, 408, a timeout, a dropped connection,
  an unreadable 200) ends the turn: groups already loaded are delivered, the rest follow
  that outcome (the tenant paused with its rows kept; a wait for ``X-RateLimit-Reset``;
  backoff), so identify rows are never overtaken by track rows of the same batch;
- every HTTP request made is counted in ``Response.requests`` (the per-key cap); the API
  key is never in a URL, a log line or an error text.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from operator import add, eq, getitem
from typing import cast
from urllib.parse import quote, urlencode

import orjson

from selligent_segment._version import __version__
from selligent_segment.delivery._retry import (
    Outcome,
    classify,
    parse_rate_limit_reset,
    parse_retry_after,
)
from selligent_segment.delivery._transport import Answer, HttpTransport, Response, scrub
from selligent_segment.destination._rows import split_row

__all__ = ["LOAD_OPTIONS", "SelligentTransport", "load_url"]

log = logging.getLogger("selligent_segment.destination")

#: The query every load sends besides ``keyFields`` and ``fields``.
LOAD_OPTIONS: Mapping[str, str] = {"mode": "Sync", "data_import_option": "InsertAndUpdate"}
#: How much of an answer is read: ``invalid_records`` of a 2,500-row load all failing.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_USER_AGENT = f"selligent-segment/{__version__}"
_KIND_ORDER = {"identify": 0, "track": 1}
#: Retried although 4xx: Selligent's request timeout.
_RETRY_4XX = frozenset({408})
#: The ``result_code`` of a load that did not write its rows (whatever it names).
_NOTHING_LOADED = frozenset({"Failed", "ValidationFailed", "NotFound"})

_Group = tuple[str, str, tuple[str, ...], tuple[str, ...]]  # kind, list, key, columns
# What split_row looks for (see there why it is sound).
_GROUP = b',"group":'
_VALUES = b',"values":'
_END = b"]}]"
#: ``body[part]`` for a slice ``part`` (``operator.getitem``, typed for bytes).
_cut = cast("Callable[[bytes, slice], bytes]", getitem)
#: Groups read (and URLs made) are kept up to this many, then forgotten all at once.
_MAX_CACHED = 4096


def load_url(base: str, list_name: str, key: Sequence[str], columns: Sequence[str]) -> str:
    """The ``data/load`` URL of ``list_name`` under ``base`` (``{selligent_url}/Portal/Api/
    organizations/{org}``) with its query."""
    query = urlencode({"keyFields": ",".join(key), "fields": ",".join(columns), **LOAD_OPTIONS})
    return f"{base}/lists/{quote(list_name, safe='')}/data/load?{query}"


class _Rows:
    """The rows of one request: their indexes in the turn and their values' bytes."""

    __slots__ = ("indexes", "order", "values")

    def __init__(self) -> None:
        self.indexes: list[int] = []
        self.values: list[bytes] = []
        self.order = 2  # identify 0, track 1, another kind after them


def _groups(bodies: Sequence[bytes]) -> tuple[dict[bytes, _Rows], dict[int, str]]:
    """The rows by group (the bytes of each payload's ``group``, in order of first
    appearance, arrival order kept within each) and the unreadable bodies' reasons. No
    row is parsed: this is :func:`~._rows.split_row` applied to every body, column by
    column (``map`` over the bodies, no Python step per row), then each group's rows
    taken with ``compress``. Equal to the plain loop, :func:`_groups_by_row` (tested)."""
    n = len(bodies)
    if not n:
        return {}, {}
    starts = list(map(bytes.find, bodies, repeat(_GROUP)))
    middles = list(map(bytes.find, bodies, repeat(_VALUES), starts))
    if min(starts) < 0 or min(middles) < 0 or not all(map(bytes.endswith, bodies, repeat(_END))):
        return _groups_by_row(bodies)  # some body is not a row: said row by row
    keys = list(map(_cut, bodies, map(slice, map(add, starts, repeat(9)), middles)))
    values = list(map(_cut, bodies, map(slice, map(add, middles, repeat(10)), repeat(-2))))
    groups: dict[bytes, _Rows] = {}
    distinct = dict.fromkeys(keys)
    if len(distinct) == 1:
        rows = groups[keys[0]] = _Rows()
        rows.indexes = list(range(n))
        rows.values = values
        return groups, {}
    for key in distinct:
        rows = groups[key] = _Rows()
        mask = list(map(eq, keys, repeat(key)))
        rows.indexes = list(compress(range(n), mask))
        rows.values = list(compress(values, mask))
    return groups, {}


def _in_key_order(groups: Mapping[bytes, _Rows]) -> list[dict[bytes, _Rows]]:
    """``groups`` cut into parts sent one after the other, so that no row is loaded
    before an earlier row with the same list and key values (in another group: other
    columns): a part ends before a row whose key was last seen in another group of it.
    Within a part, every key is in one group only, so its groups may go in any order
    (identify first). Arrival order is kept within each group of each part."""
    rows_in_order: list[tuple[int, bytes, bytes]] = sorted(
        (index, group, values)
        for group, rows in groups.items()
        for index, values in zip(rows.indexes, rows.values, strict=True)
    )
    places: dict[bytes, tuple[str, list[int]]] = {}
    for group in groups:
        _, list_name, key_fields, columns = _read_group(group)
        places[group] = (list_name, [columns.index(k) for k in key_fields if k in columns])
    parts: list[dict[bytes, _Rows]] = [{}]
    last: dict[tuple[str, tuple[object, ...]], bytes] = {}  # (list, key values) -> group
    for index, group, values in rows_in_order:
        list_name, positions = places[group]
        try:
            row = orjson.loads(values)
            key = (list_name, tuple(row[p] for p in positions))
        except Exception:  # unreadable values: the request refuses it; no order to keep
            key = (list_name, (index,))
        if last.get(key, group) != group:
            parts.append({})
            last = {}
        last[key] = group
        rows = parts[-1].get(group)
        if rows is None:
            rows = parts[-1][group] = _Rows()
            rows.order = groups[group].order
        rows.indexes.append(index)
        rows.values.append(values)
    return parts


def _groups_by_row(bodies: Sequence[bytes]) -> tuple[dict[bytes, _Rows], dict[int, str]]:
    """:func:`_groups` row by row, with :func:`~._rows.split_row` (the plain loop; also
    what reads a turn holding a body that is not a row)."""
    groups: dict[bytes, _Rows] = {}
    bad: dict[int, str] = {}
    for index, body in enumerate(bodies):
        try:
            group, values = split_row(body)
        except ValueError as exc:
            bad[index] = str(exc)
            continue
        rows = groups.get(group)
        if rows is None:
            rows = groups[group] = _Rows()
        rows.indexes.append(index)
        rows.values.append(values)
    return groups, bad


def _read_group(group: bytes) -> _Group:
    """A group's bytes as (kind, list, key, columns); ValueError if they are not one."""
    try:
        kind, list_name, key, columns = orjson.loads(group)
        spec: _Group = (kind, list_name, tuple(key), tuple(columns))
    except Exception:
        raise ValueError("not a spooled row") from None
    if not all(isinstance(x, str) for x in (kind, list_name, *spec[2], *spec[3])):
        raise ValueError("not a spooled row")
    return spec


class SelligentTransport:
    """The loader's :class:`~selligent_segment.delivery._transport.Transport`: ``post``
    takes a tenant's base URL (from the dispatcher's endpoint function), its
    ``key:secret`` and the leased rows' bodies. Thread-safe; holds no key. Requests go
    through an :class:`HttpTransport` (keep-alive, TLS verified, one deadline per request:
    ``deadline`` seconds, Selligent itself gives up after about 15 s)."""

    def __init__(
        self,
        http: HttpTransport | None = None,
        *,
        max_connections: int = 8,
        deadline: float = 30.0,
    ) -> None:
        self.http = http or HttpTransport(
            max_connections=max_connections, read_timeout=20.0, deadline=deadline
        )
        # (endpoint, group bytes) -> (URL, kind, list); a dict is safe to share here:
        # each operation is atomic, and two threads making the same entry make equal ones.
        self._urls: dict[tuple[str, bytes], tuple[str, str, str]] = {}

    def __repr__(self) -> str:
        return f"SelligentTransport({self.http!r})"

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        """Load ``bodies`` (rows of one tenant) under ``endpoint``; see the module."""
        groups, bad = _groups(bodies)
        items: dict[int, str | None] = dict(bad)  # index -> None (loaded) or why refused
        # The readable groups by kind (identify 0, track 1, others 2), in order of
        # appearance within each, each with its URL and list.
        by_kind: dict[int, dict[bytes, _Rows]] = {}
        targets: dict[bytes, tuple[str, str]] = {}
        for group, rows in groups.items():
            try:
                url, kind, list_name = self._request(endpoint, group)
            except ValueError as exc:
                items.update(dict.fromkeys(rows.indexes, str(exc)))
                continue
            rows.order = _KIND_ORDER.get(kind, rows.order)
            by_kind.setdefault(rows.order, {})[group] = rows
            targets[group] = (url, list_name)
        requests_of: list[tuple[str, str, _Rows]] = []  # url, list, rows
        for order in sorted(by_kind):  # every identify request before any track request
            kind_groups = by_kind[order]
            lists = [targets[group][1] for group in kind_groups]
            parts = [kind_groups]
            if len(set(lists)) < len(lists):  # rows of one list with other columns
                parts = _in_key_order(kind_groups)
            for part in parts:
                for group, rows in part.items():
                    requests_of.append((*targets[group], rows))
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
            "X-ApiKey": write_key,
        }
        if retry_count:
            headers["X-Retry-Count"] = str(retry_count)
        requests = 0
        last: Response | None = None
        for url, list_name, rows in requests_of:
            indexes = rows.indexes
            # The body by joining each row's values as spooled: orjson.dumps of the rows.
            payload = b"[" + b",".join(rows.values) + b"]"
            requests += 1
            started = time.perf_counter()
            answer = self.http.exchange(
                url,
                payload,
                headers,
                secret=write_key,
                interpret=functools.partial(_interpret, key=write_key, rows=len(indexes)),
                max_body=MAX_ANSWER_BYTES,
            )
            log.debug(
                "data/load %s: %d rows -> %s in %.1f ms",
                list_name,
                len(indexes),
                answer.status,
                (time.perf_counter() - started) * 1e3,
            )
            last = answer
            if answer.outcome is Outcome.DELIVERED:
                per_row = answer.items
                if per_row:
                    for position, index in enumerate(indexes):
                        items[index] = per_row.get(position)
                else:
                    items.update(dict.fromkeys(indexes))
            elif answer.outcome is Outcome.REJECTED and answer.status != _TOO_LARGE:
                # this group, for what it is
                items.update(dict.fromkeys(indexes, answer.error or f"HTTP {answer.status}"))
            else:  # unauthorized, rate limited, retry, too large: the turn ends here
                for position, reason in (answer.items or {}).items():
                    if 0 <= position < len(indexes):  # a position the request had
                        items[indexes[position]] = reason  # rows refused on their own
                return Response(
                    answer.status,
                    answer.retry_after,
                    answer.error,
                    answer.outcome,
                    rate_limit_reset=answer.rate_limit_reset,
                    items=items,
                    requests=max(requests, 1),
                )
        if last is None:  # nothing readable: every body refused on its own
            return Response(200, items=items, requests=0)
        refused = [reason for reason in items.values() if reason is not None]
        if not refused:  # every row loaded: the batch is delivered as a whole
            return Response(last.status, outcome=Outcome.DELIVERED, requests=requests)
        return Response(
            last.status, error=refused[0], outcome=Outcome.DELIVERED, items=items, requests=requests
        )

    def _request(self, endpoint: str, group: bytes) -> tuple[str, str, str]:
        """The URL, kind and list of ``group``'s request under ``endpoint`` (made once
        per pair); ValueError if ``group`` is not one."""
        known = self._urls.get((endpoint, group))
        if known is None:
            kind, list_name, key, columns = _read_group(group)
            if len(self._urls) >= _MAX_CACHED:
                self._urls.clear()
            known = self._urls[(endpoint, group)] = (
                load_url(endpoint, list_name, key, columns),
                kind,
                list_name,
            )
        return known

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()


def _errors_text(payload: object) -> str:
    if isinstance(payload, dict):
        parts = [str(payload["result_code"])] if payload.get("result_code") else []
        errors = payload.get("errors")
        if isinstance(errors, list):
            parts.extend(str(e) for e in errors[:3])
        elif errors:
            parts.append(str(errors))
        message = payload.get("message") or payload.get("Message")
        if message:
            parts.append(str(message))
        return ": ".join(parts)
    return ""


def _interpret(answer: Answer, key: str, rows: int) -> Response:
    """One ``data/load`` answer (to a request of ``rows`` rows) as a Response; ``items``
    by the request's row positions."""
    status = answer.status
    now = time.time()
    retry_after = parse_retry_after(answer.headers.get("Retry-After"), now)
    reset = parse_rate_limit_reset(answer.headers.get("X-RateLimit-Reset"), now)
    try:
        payload: object = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        payload = None
    if 200 <= status < 300:
        if answer.read_failure is not None or not isinstance(payload, dict):
            error = answer.read_failure or "the answer is not Selligent's JSON"
            return Response(None, error=scrub(f"HTTP {status}: {error}", key))
        code = payload.get("result_code")
        if code in ("ServiceUnavailable", "InternalServerError"):
            return Response(None, error=scrub(f"HTTP {status}: {_errors_text(payload)}", key))
        items: dict[int, str | None] = {}
        invalid = payload.get("invalid_records")
        if isinstance(invalid, list):
            for record in invalid:
                if not isinstance(record, dict) or not isinstance(record.get("record_index"), int):
                    continue
                field = record.get("field_name") or "?"
                why = record.get("message") or "invalid"
                code_text = record.get("validation_code")
                reason = f"Selligent refused the row: {field}: {why}"
                if code_text:
                    reason += f" ({code_text})"
                items[record["record_index"]] = scrub(reason, key)
        if code in _NOTHING_LOADED:
            if not items and code != "Failed":  # the request itself is wrong (list, keys)
                return Response(status, error=scrub(_errors_text(payload), key), outcome=_REJECT)
            if not items:  # Failed, no row named: Selligent did not load them; again
                error = f"HTTP {status}: {_errors_text(payload)}; nothing names a row"
                return Response(status, error=scrub(error, key), outcome=Outcome.RETRY)
            if all(position in items for position in range(rows)):  # each its own reason:
                return Response(status, items=items)  # nothing to send again; the turn goes on
            # Rows refused on their own, and a load that says it failed: the rows it does
            # not name may not have been written. They go again (an upsert: a row written
            # after all is only updated), never counted as loaded.
            error = f"HTTP {status}: {_errors_text(payload)}; the rows not named go again"
            return Response(status, error=scrub(error, key), outcome=Outcome.RETRY, items=items)
        return Response(status, items=items or None)
    outcome = classify(status)
    if status in _RETRY_4XX:
        outcome = Outcome.RETRY
    text = _errors_text(payload) if payload is not None else answer.reason
    if answer.read_failure is not None:
        text = f"{text}; body unreadable: {answer.read_failure}"
    error = scrub(f"HTTP {status}: {text}".rstrip(": "), key)
    if outcome is Outcome.REJECTED or outcome is Outcome.DELIVERED:
        outcome = _REJECT
    return Response(status, retry_after, error, outcome, rate_limit_reset=reset)


_REJECT = Outcome.REJECTED
#: A request too large says nothing of its rows: the turn ends refused as a whole, no row
#: refused on its own, and the dispatcher bisects it (a row alone is then refused).
_TOO_LARGE = 413
