"""The :class:`LocalSegment` class: a Segment stand-in's records, waits and controls.

One job: keep the state of one stand-in (accepted events and their keys, the message-id set,
recorded requests, dropped items, counters, valid and revoked write keys, the fault
injector) and let a test start and stop it, control it and wait on it. The socket side is
``_server.py``, what to answer ``_rules.py`` and ``_faults.py``.

Guarantees: every record is made under one condition's lock, and a request is recorded
before it is answered; every accessor returns a copy taken under that lock; every wait is on
that condition (no polling), bounded by its timeout; an accepted ``messageId`` is accepted
once, by any key; write keys are in no repr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from email.message import Message
from typing import Any

import attrs

from selligent_segment.testing._faults import FaultKind, FaultPlan
from selligent_segment.testing._rules import retry_count
from selligent_segment.testing._server import LoopbackServer, serve
from selligent_segment.testing._stand_in import StandIn

__all__ = ["DroppedEvent", "LocalSegment", "RecordedRequest"]


@attrs.frozen
class RecordedRequest:
    """One ``/v1/batch`` request as received and answered (status 0 = connection dropped).

    ``nbytes`` is the body size on the wire (before decompression); ``headers`` has
    lower-cased names; ``received_at`` is ``time.monotonic()`` when the headers were read;
    ``retry_count`` is the ``X-Retry-Count`` header (0 when absent); ``n_accepted`` counts
    events newly accepted; ``fault`` is the injected fault kind that answered it, if any.
    """

    write_key: str | None = attrs.field(repr=False)
    status: int
    n_items: int
    nbytes: int
    headers: Mapping[str, str] = attrs.field(repr=False, hash=False)
    received_at: float
    retry_count: int
    n_accepted: int = 0
    fault: FaultKind | None = None


@attrs.frozen
class DroppedEvent:
    """An item answered 200 but silently dropped, with the reason (as Segment would)."""

    reason: str
    event: Any = attrs.field(hash=False)
    write_key: str | None = attrs.field(repr=False)


class LocalSegment(StandIn):
    """A Segment ``/v1/batch`` server on a real loopback socket; thread-safe records.

    It serves ``POST /v1/batch`` on loopback (an ephemeral port by default) and applies
    Segment's documented rules, so delivery code can be exercised over real sockets:

    - HTTP Basic auth with the write key as user and an empty password; when no
      ``Authorization`` header is sent, ``writeKey`` in the body is used. Missing, unknown or
      revoked key: ``401``.
    - ``Content-Encoding: gzip`` bodies are accepted.
    - Request body over 500 KB (``500 * 1024`` bytes, measured after decompression), invalid
      JSON, or a body that is not an object with a ``batch`` list: ``400``.
    - More than 2,500 items: ``200`` but every event is dropped (recorded in :attr:`dropped`).
    - Items Segment drops silently are answered ``200`` and recorded in :attr:`dropped` with a
      reason: over 32 KB (``32 * 1024`` bytes of the item *re-serialised compactly* with
      orjson, i.e. UTF-8 without whitespace), missing/unknown ``type``, missing ``messageId``
      or one over 100 characters, a ``track`` without ``event``, neither ``userId`` nor
      ``anonymousId``; and, when ``refuse`` is given, items for which ``refuse(item)`` returns
      a reason. With ``strict=True`` such a batch is answered ``400`` instead and nothing
      in it is accepted (so bisection of 400s can be tested).
    - A ``messageId`` already accepted (by any key) is counted in :attr:`duplicates` and not
      accepted again.
    - Error bodies are JSON ``{"code": ..., "message": ...}``; success is
      ``{"success": true}``.

    Faults (:class:`Fault`, :class:`FaultPlan`, :meth:`set_faults`) answer before these rules;
    :meth:`outage` fails every request until :meth:`end_outage`. Besides ``/v1/batch`` it
    answers ``GET /_stats``, ``POST /_reset`` and ``POST /_faults`` (see :func:`main`).

    Guarantees: every ``/v1/batch`` request is answered per these rules (or by an injected
    fault) and recorded before it is answered; accepted events are recorded in arrival order
    with the write key that sent them; all accessors return copies taken under a lock.
    With ``record_events=False`` only counters and the message-id set are kept (lists stay
    empty), for benchmarks. Write keys never appear in a repr or an exception text.
    """

    _name = "LocalSegment"
    _keys_argument = "write_keys"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        write_keys: Iterable[str] | None = None,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        strict: bool = False,
        record_events: bool = True,
        refuse: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        super().__init__(host=host, port=port, keys=write_keys, faults=faults, latency=latency)
        self._strict = bool(strict)
        self._record_events = bool(record_events)
        self._refuse = refuse
        self._accepted: list[dict[str, Any]] = []
        self._accepted_keys: list[str | None] = []
        self._requests: list[RecordedRequest] = []
        self._dropped: list[DroppedEvent] = []
        self._ids: set[str] = set()
        self._n_accepted = 0
        self._n_dropped = 0
        self._n_duplicates = 0

    def _serve(self) -> LoopbackServer:
        return serve(self._host, self._port, self)

    # -- keys -----------------------------------------------------------------------------

    def add_write_key(self, key: str) -> None:
        """Accept ``key`` from now on (also un-revokes it)."""
        self._add_key(key)

    def revoke_write_key(self, key: str) -> None:
        """Answer 401 to ``key`` from now on (even when any key is accepted)."""
        self._revoke_key(key)

    # -- records --------------------------------------------------------------------------

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Accepted events, in arrival order, exactly as sent (copy of the list)."""
        with self._cond:
            return list(self._accepted)

    def events(self, write_key: str | None = None) -> list[dict[str, Any]]:
        """Accepted events, optionally only those sent with ``write_key``."""
        with self._cond:
            if write_key is None:
                return list(self._accepted)
            return [
                ev
                for ev, key in zip(self._accepted, self._accepted_keys, strict=True)
                if key == write_key
            ]

    def message_ids(self) -> set[str]:
        """The ``messageId`` of every accepted event (kept even without ``record_events``)."""
        with self._cond:
            return set(self._ids)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every ``/v1/batch`` request in the order answered (copy of the list)."""
        with self._cond:
            return list(self._requests)

    @property
    def dropped(self) -> list[DroppedEvent]:
        """Items answered 200 but dropped, with the reason (copy of the list)."""
        with self._cond:
            return list(self._dropped)

    @property
    def duplicates(self) -> int:
        """How many items repeated an already accepted ``messageId``."""
        with self._cond:
            return self._n_duplicates

    @property
    def accepted_count(self) -> int:
        """How many events were accepted (a counter; exact even without ``record_events``)."""
        with self._cond:
            return self._n_accepted

    @property
    def request_count(self) -> int:
        """How many ``/v1/batch`` requests were answered or dropped (a counter)."""
        with self._cond:
            return self._n_requests

    def stats(self) -> dict[str, int]:
        """Counters, as served by ``GET /_stats``; O(1)."""
        with self._cond:
            return {
                "accepted": self._n_accepted,
                "unique_message_ids": len(self._ids),
                "requests": self._n_requests,
                "dropped": self._n_dropped,
                "duplicates": self._n_duplicates,
            }

    def clear(self) -> None:
        """Forget all records, counters and message ids (faults and keys are kept)."""
        with self._cond:
            self._accepted.clear()
            self._accepted_keys.clear()
            self._requests.clear()
            self._dropped.clear()
            self._ids.clear()
            self._n_accepted = self._n_requests = self._n_dropped = self._n_duplicates = 0
            self._n_arrived = 0
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` events are accepted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_accepted >= count, timeout)

    def wait_for_ids(self, message_ids: Iterable[str], timeout: float = 10.0) -> bool:
        """Block until every one of ``message_ids`` was accepted; False on timeout."""
        wanted = set(message_ids)
        with self._cond:
            return self._cond.wait_for(lambda: wanted <= self._ids, timeout)

    # -- what the server records (_server.py) -------------------------------------------

    def _record(
        self,
        headers: Message,
        key: str | None,
        status: int,
        n_items: int,
        nbytes: int,
        received_at: float,
        fault: FaultKind | None = None,
        items: Sequence[Any] = (),
        reasons: Sequence[str | None] = (),
    ) -> None:
        """Record one answered (or dropped, ``status`` 0) request, before it is answered.

        ``items`` and their ``reasons`` (as the rules judged them) are given for a ``200``
        only: each is dropped with its reason, counted as a duplicate when its ``messageId``
        was accepted before, or else accepted.
        """
        record = self._record_events
        lowered: dict[str, str] = {}
        n_retries = 0
        if record:
            lowered = {name.lower(): value for name, value in headers.items()}
            n_retries = retry_count(lowered.get("x-retry-count"))
        n_new = 0
        with self._cond:
            ids = self._ids
            for item, reason in zip(items, reasons, strict=True):
                if reason is not None:
                    self._n_dropped += 1
                    if record:
                        self._dropped.append(DroppedEvent(reason, item, key))
                    continue
                mid = item["messageId"]
                if mid in ids:
                    self._n_duplicates += 1
                    continue
                ids.add(mid)
                n_new += 1
                if record:
                    self._accepted.append(item)
                    self._accepted_keys.append(key)
            self._n_accepted += n_new
            self._n_requests += 1
            if record:
                self._requests.append(
                    RecordedRequest(
                        write_key=key,
                        status=status,
                        n_items=n_items,
                        nbytes=nbytes,
                        headers=lowered,
                        received_at=received_at,
                        retry_count=n_retries,
                        n_accepted=n_new,
                        fault=fault,
                    )
                )
            self._cond.notify_all()
