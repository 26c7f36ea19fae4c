"""The HTTP side of :class:`~selligent_segment.testing.LocalSelligent`: the loopback server
of ``_server.py`` (threads, connection tracking, fast stop, body reading and writing) with
Selligent's routes.

One job: bytes on a socket in, an answer out. Routes: ``POST
/Portal/Api/organizations/{org}/lists/{list}/data/load``, ``GET /_stats``, ``GET
/_rows?list=NAME``, ``POST /_reset``, ``POST /_faults``; anything else is ``404``.

Guarantees: a load is recorded (and its rows upserted) by the owner before its answer is
written or its connection dropped; injected faults answer before authentication and the
rules; nothing is logged, so no API key reaches a log.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote

import orjson

from selligent_segment.testing._faults import Fault, parse_fault_control
from selligent_segment.testing._rules import OK, Answer
from selligent_segment.testing._selligent_rules import judge_load, load_answer, selligent_error
from selligent_segment.testing._server import LoopbackServer, RequestHandler

if TYPE_CHECKING:
    from selligent_segment.testing._local_selligent import LocalSelligent

__all__ = ["SelligentServer", "serve_selligent"]

_PREFIX = "/Portal/Api/organizations/"
_NOT_FOUND = selligent_error(404, "NotFound", "no such endpoint")
_UNREADABLE = selligent_error(400, "ValidationFailed", "request body unreadable")
_UNAUTHORIZED = selligent_error(401, None, "Unauthorized: invalid or missing X-ApiKey")
_RESULT_CODES = {503: "ServiceUnavailable", 500: "InternalServerError", 404: "NotFound"}


def serve_selligent(host: str, port: int, owner: LocalSelligent) -> SelligentServer:
    """Bind ``host:port`` (IPv6 when ``host`` has a colon) and serve in a daemon thread."""
    cls = _SelligentServer6 if ":" in host else SelligentServer
    server = cls(host, port, owner)
    server.start()
    return server


class SelligentServer(LoopbackServer):
    """The loopback server of one :class:`LocalSelligent` (``owner``)."""

    owner: LocalSelligent

    def __init__(self, host: str, port: int, owner: LocalSelligent) -> None:
        self.owner = owner
        # LoopbackServer keeps its owner as ``segment`` (typed LocalSegment); this server's
        # handler reads ``owner`` instead, and the base class only stores it.
        super().__init__(host, port, cast(Any, owner))
        self.RequestHandlerClass = SelligentHandler


class _SelligentServer6(SelligentServer):
    address_family = socket.AF_INET6


def fault_answer(fault: Fault) -> Answer:
    """A status fault in Selligent's words (with the rate-limit headers of a 429)."""
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("Retry-After", str(fault.retry_after)))
    if fault.status == 429:
        reset = fault.x_ratelimit_reset if fault.x_ratelimit_reset is not None else 60
        headers += [
            ("X-RateLimit-Limit", "2500"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", str(reset)),
        ]
    elif fault.x_ratelimit_reset is not None:
        headers.append(("X-RateLimit-Reset", str(fault.x_ratelimit_reset)))
    code = _RESULT_CODES.get(fault.status)
    answer = selligent_error(fault.status, code, f"injected fault: HTTP {fault.status}")
    return Answer(answer.status, answer.body, tuple(headers))


class SelligentHandler(RequestHandler):
    """One connection to a LocalSelligent."""

    server_version = "LocalSelligent/1"
    server: SelligentServer

    def do_POST(self) -> None:
        """Route POST requests."""
        path, _, query = self.path.partition("?")
        owner = self.server.owner
        if path.startswith(_PREFIX) and path.endswith("/data/load"):
            self._load(path, query)
            return
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send(_UNREADABLE)
        elif path == "/_reset":
            owner.clear()
            self._send(OK)
        elif path == "/_faults":
            try:
                plan, outage = parse_fault_control(raw)
            except (ValueError, TypeError) as exc:
                self._send(selligent_error(400, None, str(exc)))
                return
            owner._control_faults(plan, outage)
            self._send(OK)
        else:
            self._send(_NOT_FOUND)

    def do_GET(self) -> None:
        """Route GET requests."""
        path, _, query = self.path.partition("?")
        owner = self.server.owner
        if path == "/_stats":
            self._send(Answer(200, orjson.dumps(owner.stats())))
        elif path == "/_rows":
            name = dict(parse_qsl(query)).get("list", "")
            self._send(Answer(200, orjson.dumps(owner.rows(name))))
        else:
            self._send(_NOT_FOUND)

    def _load(self, path: str, query: str) -> None:
        """``data/load``: faults, latency, auth, organization and list, then the rules."""
        owner = self.server.owner
        received_at = time.monotonic()
        owner._note_arrival()
        key = self.headers.get("X-ApiKey")
        parts = path[len(_PREFIX) :].split("/")
        raw = self._read_body()
        if raw is None or len(parts) != 5 or parts[1] != "lists":
            self.close_connection = raw is None
            answer = _UNREADABLE if raw is None else _NOT_FOUND
            owner._record(key, "", "", answer.status, received_at)
            self._send(answer)
            return
        organization, list_name = unquote(parts[0]), unquote(parts[2])

        fault = owner._faults.next(key)
        if fault is not None:
            if fault.seconds:
                time.sleep(fault.seconds)
            if fault.kind == "drop":
                self.close_connection = True
                owner._record(key, organization, list_name, 0, received_at, fault="drop")
                return
            if fault.kind == "status":
                answer = fault_answer(fault)
                owner._record(key, organization, list_name, answer.status, received_at, "status")
                self._send(answer)
                return
        if owner._latency:
            time.sleep(owner._latency)

        if not owner._key_ok(key):
            owner._record(key, organization, list_name, 401, received_at)
            self._send(_UNAUTHORIZED)
            return
        declared = owner._declared(list_name)
        if not owner._organization_ok(organization) or declared is False:
            answer = selligent_error(404, "NotFound", "no such organization or list")
            owner._record(key, organization, list_name, 404, received_at)
            self._send(answer)
            return
        params = {name.lower(): value for name, value in parse_qsl(query)}
        request, valid, invalid, refused = judge_load(
            params, raw, declared if declared is not True else None
        )
        if refused is not None or request is None:
            answer = refused or _UNREADABLE
            owner._record(key, organization, list_name, answer.status, received_at)
            self._send(answer)
            return
        inserted, updated, duplicates = owner._upsert(list_name, request, valid)
        answer = load_answer(inserted, updated, duplicates, invalid, len(request.rows))
        owner._record(
            key,
            organization,
            list_name,
            200,
            received_at,
            n_rows=len(request.rows),
            n_failed=len(invalid),
            invalid=invalid,
            fields=request.fields,
            key_fields=request.key_fields,
        )
        self._send(answer)
