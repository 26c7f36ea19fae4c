"""One sender's turn against Selligent Marketing Cloud: a leased batch of rows posted as
``data/load`` requests, and what came of each row.

One job: group the leased rows of one tenant by (list, ``keyFields``, columns), identify
rows first (a new contact exists before its interactions), post each group as one
``POST {base}/Portal/Api/organizations/{org}/lists/{list}/data/load`` with ``keyFields``,
``fields`` (so every body row is a data row and ``record_index`` is unambiguous) and
``data_import_option=InsertAndUpdate`` (a replayed row updates, never duplicates), and
report one :class:`~selligent_segment.delivery._transport.Response` for the whole turn.

Guarantees (what the dispatcher then does with them):

- a row listed in a 200's ``invalid_records`` (``PartiallySucceeded`` / ``Failed``) is
  refused on its own with Selligent's reason (``field: message (code)``); the others of
  its request are delivered;
- a group refused as a whole for what it is (400, 404, 405, 413, 422, a 3xx) refuses its
  rows with Selligent's ``errors`` text, and the next group is still sent;
- the first 401/403, 429 or retryable failure (5xx, 408, a timeout, a dropped connection,
  an unreadable 200) ends the turn: groups already loaded are delivered, the rest follow
  that outcome (the tenant paused with its rows kept; a wait for ``X-RateLimit-Reset``;
  backoff), so identify rows are never overtaken by track rows of the same batch;
- every HTTP request made is counted in ``Response.requests`` (the per-key cap); the API
  key is never in a URL, a log line or an error text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
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
from selligent_segment.destination._rows import Row, read_row

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

_Group = tuple[str, str, tuple[str, ...], tuple[str, ...]]  # kind, list, key, columns


def load_url(base: str, list_name: str, key: Sequence[str], columns: Sequence[str]) -> str:
    """The ``data/load`` URL of ``list_name`` under ``base`` (``{selligent_url}/Portal/Api/
    organizations/{org}``) with its query."""
    query = urlencode({"keyFields": ",".join(key), "fields": ",".join(columns), **LOAD_OPTIONS})
    return f"{base}/lists/{quote(list_name, safe='')}/data/load?{query}"


def _groups(bodies: Sequence[bytes]) -> tuple[dict[_Group, list[int]], dict[int, str], list[Row]]:
    """Row indexes by group (identify groups first, arrival order kept within each), the
    unreadable bodies' reasons, and the rows."""
    groups: dict[_Group, list[int]] = {}
    bad: dict[int, str] = {}
    rows: list[Row] = []
    for index, body in enumerate(bodies):
        try:
            row = read_row(body)
        except ValueError as exc:
            bad[index] = str(exc)
            rows.append(Row("", "", (), (), []))
            continue
        rows.append(row)
        groups.setdefault((row.kind, row.list, row.key, row.columns), []).append(index)
    ordered = dict(sorted(groups.items(), key=lambda item: _KIND_ORDER.get(item[0][0], 2)))
    return ordered, bad, rows


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

    def __repr__(self) -> str:
        return f"SelligentTransport({self.http!r})"

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        """Load ``bodies`` (rows of one tenant) under ``endpoint``; see the module."""
        groups, bad, rows = _groups(bodies)
        items: dict[int, str | None] = dict(bad)  # index -> None (loaded) or why refused
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
        for (_, list_name, key, columns), indexes in groups.items():
            url = load_url(endpoint, list_name, key, columns)
            payload = orjson.dumps([rows[i].values for i in indexes])
            requests += 1
            started = time.perf_counter()
            answer = self.http.exchange(
                url,
                payload,
                headers,
                secret=write_key,
                interpret=lambda a: _interpret(a, write_key),
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
                per_row = answer.items or {}
                for position, index in enumerate(indexes):
                    items[index] = per_row.get(position)
            elif answer.outcome is Outcome.REJECTED:  # this group, for what it is
                reason = answer.error or f"HTTP {answer.status}"
                for index in indexes:
                    items[index] = reason
            else:  # unauthorized, rate limited, retry: the turn ends here
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
        error = refused[0] if refused else None
        return Response(
            last.status, error=error, outcome=Outcome.DELIVERED, items=items, requests=requests
        )

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


def _interpret(answer: Answer, key: str) -> Response:
    """One ``data/load`` answer as a Response; ``items`` by the request's row positions."""
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
        if code in ("Failed", "ValidationFailed", "NotFound") and not items:
            return Response(status, error=scrub(_errors_text(payload), key), outcome=_REJECT)
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
