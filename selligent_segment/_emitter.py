"""The :class:`Emitter`: the platform's hooks hand events to it; it delivers them."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timezone
from pathlib import Path
from typing import Any

import orjson

from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment._config import DEFAULTS, EmitterConfig
from selligent_segment._errors import (
    ConfigurationError,
    EmitterClosed,
    InvalidEvent,
    SelligentSegmentError,
    SpoolError,
    SpoolFull,
    UnknownTenant,
    shown,
)
from selligent_segment._mapping import EncodedMessage, encode_fields
from selligent_segment._naming import EventNaming
from selligent_segment._process_life import install_sigterm_handler, register, unregister
from selligent_segment._record import CallbackRecord, EventKind, normalize, revive
from selligent_segment._results import BulkResult, DeliveryFailure
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._endpoint import resolve_endpoint
from selligent_segment.delivery._keys import KeyResolver, WriteKeys
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.delivery._stats import Counters, Stats
from selligent_segment.delivery._transport import HttpTransport, Transport
from selligent_segment.spool._journal import Mark, frame, unframe
from selligent_segment.spool._memory import MemorySpool
from selligent_segment.spool._protocol import OnFull
from selligent_segment.spool._schema import spool_path
from selligent_segment.spool._sqlite import DeadMessage, JournalRecord, SqliteSpool

__all__ = ["Emitter"]

log = logging.getLogger("selligent_segment")

_UTC = timezone.utc
_ENCODE_CHUNK = 512
_INGEST_CHUNK = 4096
_GATHER = 0.002
# A record this small always maps to a message under 32 KB (a message holds the record's
# fields, the email twice, up to 1.5x longer once lower-cased, and under 4 KB of more).
_CHECK_SIZE_ABOVE = 8 * 1024
_LOG_EVERY = 10.0
_MAINTAIN_EVERY = 1.0


#: What the encoder takes from the inbox. In memory: one record, (fields, tenant, emit
#: time, None). With a spool file: one journal write, (its frames, the (tenant, kind) of
#: each, the mark after it); the encoder moves the records into the file as they are.
_Entry = tuple[Any, Any, Any, "Mark | None"]


class Emitter:
    """Accepts email callbacks and delivers them to each tenant's Segment workspace.

    Guarantees: ``emit`` validates the record, then only appends it to an in-memory
    queue: it never waits on the network or on a lock held across I/O (with
    ``on_full="block"`` it may wait up to ``block_timeout`` for room). Every accepted
    event ends delivered, or reported through ``on_failure`` and counted in
    :meth:`stats`; none disappears silently. A fixed pool of ``threads`` senders serves
    every tenant; one tenant's outage, 429s or revoked key never delays another's events.

    Its keyword arguments are the settings of :class:`EmitterConfig`, which documents
    each one and its default (written there once) and validates them all when the
    Emitter is made (:class:`ConfigurationError` names the setting).
    """

    def __init__(
        self,
        write_key: str | None = None,
        *,
        write_keys: Mapping[str, str] | KeyResolver | None = None,
        endpoint: str | None = DEFAULTS.endpoint,
        region: str = DEFAULTS.region,
        allow_insecure_http: bool = DEFAULTS.allow_insecure_http,
        spool: str | os.PathLike[str] = DEFAULTS.spool,
        fsync: bool = DEFAULTS.fsync,
        max_spool_bytes: int = DEFAULTS.max_spool_bytes,
        max_pending: int = DEFAULTS.max_pending,
        on_full: str | OnFull = DEFAULTS.on_full,
        block_timeout: float = DEFAULTS.block_timeout,
        naming: EventNaming | None = None,
        batch: BatchPolicy | None = None,
        retry: RetryPolicy | None = DEFAULTS.retry,
        threads: int = DEFAULTS.threads,
        max_requests_per_second: float = DEFAULTS.max_requests_per_second,
        timeout: float = DEFAULTS.timeout,
        request_deadline: float | None = DEFAULTS.request_deadline,
        on_failure: Callable[[DeliveryFailure], None] | None = DEFAULTS.on_failure,
        on_pause: Callable[[str, str], None] | None = DEFAULTS.on_pause,
        exit_timeout: float = DEFAULTS.exit_timeout,
        handle_sigterm: bool = DEFAULTS.handle_sigterm,
        transport: Transport | None = DEFAULTS.transport,
        clock: Clock | None = DEFAULTS.clock,
    ) -> None:
        policies: dict[str, Any] = {}
        if naming is not None:
            policies["naming"] = naming
        if batch is not None:
            policies["batch"] = batch
        self._init(
            EmitterConfig(
                write_key=write_key,
                write_keys=write_keys,
                endpoint=endpoint,
                region=region,
                allow_insecure_http=allow_insecure_http,
                spool=spool,
                fsync=fsync,
                max_spool_bytes=max_spool_bytes,
                max_pending=max_pending,
                on_full=on_full,
                block_timeout=block_timeout,
                retry=retry,
                threads=threads,
                max_requests_per_second=max_requests_per_second,
                timeout=timeout,
                request_deadline=request_deadline,
                on_failure=on_failure,
                on_pause=on_pause,
                exit_timeout=exit_timeout,
                handle_sigterm=handle_sigterm,
                transport=transport,
                clock=clock,
                **policies,
            )
        )

    @classmethod
    def from_config(cls, config: EmitterConfig) -> Emitter:
        """An Emitter with the settings of ``config`` (the same as passing each one)."""
        if not isinstance(config, EmitterConfig):
            raise ConfigurationError("config", "expected an EmitterConfig")
        emitter = cls.__new__(cls)
        emitter._init(config)
        return emitter

    @property
    def config(self) -> EmitterConfig:
        """The settings this Emitter was made with."""
        return self._config

    def _init(self, config: EmitterConfig) -> None:
        self._config = config
        self._keys = WriteKeys(config.write_key, config.write_keys)
        self._endpoint = resolve_endpoint(
            config.endpoint, config.region, config.allow_insecure_http
        )
        self._spool_path: Path | None = spool_path(config.spool) if config.durable else None
        self._fsync = config.fsync
        self._on_full = config.on_full
        self._max_spool_bytes = config.max_spool_bytes
        self._max_pending = config.max_pending
        self._block_timeout = config.block_timeout
        self._naming = config.naming
        self._batch = config.batch
        self._retry = config.retry_policy
        self._threads = config.threads
        self._rate = config.max_requests_per_second
        self._timeout = config.timeout
        self._request_deadline = config.request_deadline
        self._user_on_failure = config.on_failure
        self._user_on_pause = config.on_pause
        self._exit_timeout = config.exit_timeout
        self._clock = config.clock or SYSTEM_CLOCK
        self._default_tenant = self._keys.default_tenant()
        self._setup()
        register(self)
        if config.handle_sigterm:
            install_sigterm_handler()
        if self._spool_path is not None:
            self._start()  # deliver what earlier runs or dead processes left in the file

    def _setup(self) -> None:
        """(Re)build every piece of runtime state: at construction and after fork."""
        self._pid = os.getpid()
        self._closed = False
        self._started = False
        self._start_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._inbox: deque[_Entry] = deque()
        # With a spool file: records journaled (under _accept_lock) and moved into the
        # file (by the encoder); the difference is what waits in the inbox.
        self._journaled = 0
        self._ingested = 0
        self._bulk_calls = 0  # emit_many calls under way (the encoder yields to them)
        self._accept_lock = threading.Lock()
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._encoder_idle = self._spool_path is None  # durable: busy until recovery ran
        self._stop_encoder = False
        self._encoder: threading.Thread | None = None
        self._counters = Counters()
        self._durable: SqliteSpool | None = None
        self._spool: MemorySpool | SqliteSpool
        if self._spool_path is None:
            self._spool = MemorySpool(self._max_spool_bytes)
        else:
            self._spool = self._durable = SqliteSpool(
                self._spool_path,
                max_bytes=self._max_spool_bytes,
                decoder=self._decode_journaled,
                fsync=self._fsync,
            )
        self._next_maintain = 0.0
        self._closed_result: bool | None = None
        self._at_cap = False
        self._transport: Transport = self._config.transport or HttpTransport(
            max_connections=self._threads,
            read_timeout=self._timeout,
            deadline=self._request_deadline,
            gzip=self._batch.gzip,
        )
        self._last_full_log = float("-inf")
        self._full_since_log = 0
        self._dispatcher = Dispatcher(
            spool=self._spool,
            keys=self._keys,
            endpoint=self._endpoint,
            transport=self._transport,
            batch=self._batch,
            retry=self._retry,
            threads=self._threads,
            max_requests_per_second=self._rate,
            counters=self._counters,
            on_failure=self._on_failure,
            on_pause=self._on_pause,
            clock=self._clock,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Emitter {self._endpoint} {self._keys!r} {state}>"

    # -- accepting -------------------------------------------------------------------

    def emit(self, record: CallbackRecord | Mapping[str, Any]) -> bool:
        """Accept one callback record (a :class:`CallbackRecord` or its dict form).

        Returns True when accepted, False when dropped by ``on_full="drop_newest"``.
        Raises InvalidEvent (naming the field), UnknownTenant, SpoolFull or EmitterClosed;
        a refused record never affects another.
        """
        if self._closed:
            raise EmitterClosed("emit() after close(); the event was not accepted")
        fields, tenant = self._check(record)
        inbox = self._inbox
        if self._pending() >= self._max_pending and not self._wait_for_room(tenant):
            return False
        now = None if "timestamp" in fields else time.time()
        durable = self._durable
        if durable is None:
            inbox.append((fields, tenant, now, None))
        else:
            data = frame(orjson.dumps((tenant, now, fields)))
            meta = ((tenant, fields["type"]._value_),)
            with self._accept_lock:  # journal order = inbox order
                inbox.append((data, meta, None, durable.accept_frames(data)))
                self._journaled += 1
        if self._encoder_idle:
            self._wake.set()
        if not self._started:
            self._start()
        return True

    def _check(self, record: CallbackRecord | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        fields = record._fields if isinstance(record, CallbackRecord) else normalize(record)
        tenant = fields.get("tenant") or self._default_tenant
        if tenant is None:
            raise InvalidEvent("tenant", "required when write_keys names several tenants")
        if not self._keys.known(tenant):
            raise UnknownTenant(tenant)
        return fields, tenant

    def emit_many(self, records: Iterable[CallbackRecord | Mapping[str, Any]]) -> BulkResult:
        """Accept many records; cheaper per record than :meth:`emit` (one journal write
        per chunk with a durable spool).

        Invalid records and those of unknown tenants are refused one by one and returned
        with their index; the others are accepted. When the spool is full the ``on_full``
        policy applies to the rest: SpoolFull (its ``accepted`` says how many records were
        accepted before it), a wait, or dropping them (counted in ``refused`` as SpoolFull).
        """
        if self._closed:
            raise EmitterClosed("emit_many() after close(); no event was accepted")
        refused: list[tuple[int, SelligentSegmentError]] = []
        chunk: list[tuple[int, dict[str, Any], str]] = []
        accepted = 0
        with self._accept_lock:
            self._bulk_calls += 1
        try:
            for index, record in enumerate(records):
                try:
                    fields, tenant = self._check(record)
                except (InvalidEvent, UnknownTenant) as exc:
                    refused.append((index, exc))
                    continue
                chunk.append((index, fields, tenant))
                if len(chunk) >= _ENCODE_CHUNK:
                    accepted += self._accept_chunk(chunk, refused, accepted)
                    chunk = []
            if chunk:
                accepted += self._accept_chunk(chunk, refused, accepted)
        finally:
            with self._accept_lock:
                self._bulk_calls -= 1
            self._wake.set()
        return BulkResult(accepted, tuple(refused))

    def _accept_chunk(
        self,
        chunk: Sequence[tuple[int, dict[str, Any], str]],
        refused: list[tuple[int, SelligentSegmentError]],
        accepted_before: int,
    ) -> int:
        if self._pending() >= self._max_pending and not self._wait_for_ingest():
            try:
                room = self._wait_for_room(chunk[0][2], len(chunk))
            except SpoolFull as exc:
                exc.accepted = accepted_before
                raise
            if not room:
                dropped = SpoolFull("spool full: dropped (on_full=drop_newest)")
                refused.extend((index, dropped) for index, _, _ in chunk)
                return 0
        now = time.time()
        entries = [(f, t, None if "timestamp" in f else now) for _, f, t in chunk]
        durable = self._durable
        if durable is None:
            self._inbox.extend((f, t, n, None) for f, t, n in entries)
        else:
            # Framed one by one: orjson's results keep a 4 KiB buffer each until freed.
            data = b"".join([frame(orjson.dumps((t, n, f))) for f, t, n in entries])
            meta = [(t, f["type"]._value_) for f, t, _ in entries]
            with self._accept_lock:
                self._inbox.append((data, meta, None, durable.accept_frames(data)))
                self._journaled += len(meta)
        if self._encoder_idle:
            self._wake.set()
        if not self._started:
            self._start()
        return len(entries)

    def _emit_kind(self, kind: EventKind, fields: dict[str, Any]) -> bool:
        fields["type"] = kind
        return self.emit(fields)

    def delivered(self, **fields: Any) -> bool:
        """``emit`` an ``Email Delivered`` record given as keyword fields."""
        return self._emit_kind(EventKind.DELIVERED, fields)

    def opened(self, **fields: Any) -> bool:
        """``emit`` an ``Email Opened`` record given as keyword fields."""
        return self._emit_kind(EventKind.OPENED, fields)

    def link_clicked(self, **fields: Any) -> bool:
        """``emit`` an ``Email Link Clicked`` record given as keyword fields."""
        return self._emit_kind(EventKind.LINK_CLICKED, fields)

    def unsubscribed(self, **fields: Any) -> bool:
        """``emit`` an ``Email Unsubscribed`` record given as keyword fields."""
        return self._emit_kind(EventKind.UNSUBSCRIBED, fields)

    def bounced(self, **fields: Any) -> bool:
        """``emit`` an ``Email Bounced`` record given as keyword fields."""
        return self._emit_kind(EventKind.BOUNCED, fields)

    def marked_as_spam(self, **fields: Any) -> bool:
        """``emit`` an ``Email Marked as Spam`` record given as keyword fields."""
        return self._emit_kind(EventKind.MARKED_AS_SPAM, fields)

    def _pending(self) -> int:
        """Accepted records the encoder has not moved into the spool yet."""
        if self._durable is None:
            return len(self._inbox)
        return self._journaled - self._ingested

    def _wait_for_ingest(self) -> bool:
        """With a durable spool, wait while the encoder is moving records into the file
        (a bulk hand-over goes at the spool's pace); False when the spool is at its cap,
        closed, or in memory: then ``on_full`` decides."""
        if self._durable is None:
            return False
        with self._room:
            while self._pending() >= self._max_pending:
                if self._at_cap or self._closed:
                    return False
                self._room.wait(0.5)
        return True

    def _wait_for_room(self, tenant: str, n: int = 1) -> bool:
        if self._on_full is OnFull.BLOCK:
            with self._room:
                if self._room.wait_for(
                    lambda: self._pending() < self._max_pending, self._block_timeout
                ):
                    return True
        self._counters.refuse("spool_full", n)
        self._log_full(n)
        if self._on_full is OnFull.DROP_NEWEST:
            self._on_failure(DeliveryFailure.spool_full(tenant))
            return False
        raise SpoolFull(f"{self._max_pending} events are waiting; the event was not accepted")

    def _log_rarely(self, message: str, *args: object) -> bool:
        """Log ``message`` at ERROR unless a full-spool line went out in the last
        ``_LOG_EVERY`` seconds; True when it was logged."""
        now = time.monotonic()
        if now - self._last_full_log < _LOG_EVERY:
            return False
        log.error(message, *args)
        self._last_full_log = now
        return True

    def _log_full(self, n: int = 1) -> None:
        self._full_since_log += n
        if self._log_rarely(
            "selligent-segment: spool full: %d events refused since the last report (policy %s)",
            self._full_since_log,
            self._on_full.value,
        ):
            self._full_since_log = 0

    # -- background work -------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._started or self._closed:
                return
            self._encoder = threading.Thread(
                target=self._encode_loop, name="selligent-segment-encoder", daemon=True
            )
            self._encoder.start()
            self._dispatcher.start()
            self._started = True

    def _encode_loop(self) -> None:
        inbox = self._inbox
        while True:
            if self._durable is not None and time.monotonic() >= self._next_maintain:
                self._maintain()
            if not inbox:
                self._encoder_idle = True
                if not inbox:
                    with self._dispatcher.settled:
                        self._dispatcher.settled.notify_all()
                    if self._stop_encoder:
                        return
                    self._wake.wait(0.5)
                    self._wake.clear()
                self._encoder_idle = False
                self._gather()
                continue
            if self._yield_to_bulk():
                continue
            try:
                if self._durable is None:
                    self._encode_some(inbox)
                else:
                    self._ingest_some(self._durable, inbox)
            except Exception:  # a bug must not stop acceptance
                log.exception("selligent-segment: encoder error")

    def _gather(self) -> None:
        """Woken by the first ``emit`` after a quiet spell: let a burst gather for up to
        ``_GATHER`` seconds (less than the batch linger) before encoding. Meanwhile the
        encoder counts as busy, so ``emit`` skips ``Event.set``, which took about 15% of a
        call's time when every event woke the encoder on its own."""
        if len(self._inbox) < _ENCODE_CHUNK and not self._stop_encoder:
            time.sleep(min(_GATHER, self._batch.linger))

    def _yield_to_bulk(self) -> bool:
        """With a spool file, while an ``emit_many`` is under way and fewer than
        ``max_pending`` records wait, leave the GIL to it (its records are journaled
        already); True when the encoder waited instead of ingesting."""
        if self._durable is None or not self._bulk_calls or self._stop_encoder:
            return False
        if self._pending() >= self._max_pending:
            return False
        self._wake.wait(0.05)
        self._wake.clear()
        return True

    def _maintain(self) -> None:
        assert self._durable is not None
        self._next_maintain = time.monotonic() + _MAINTAIN_EVERY
        try:
            tenants = self._durable.maintain()
        except Exception:  # the next round tries again
            log.exception("selligent-segment: spool upkeep failed")
            return
        if tenants:
            self._dispatcher.notify_put(tenants)

    def _decode_journaled(self, payload: bytes | memoryview) -> EncodedMessage:
        """A journal record (tenant, emit time, fields) as its message; InvalidEvent when
        it is unreadable or its message is over 32 KB."""
        try:
            tenant, now, raw = orjson.loads(payload)
            return encode_fields(revive(raw), tenant, self._naming, now)
        except InvalidEvent:
            raise
        except Exception:  # a damaged record: whatever it breaks, it is not a message
            raise InvalidEvent("record", "unreadable journal record") from None

    def _encode_some(self, inbox: deque[_Entry]) -> None:
        """In memory: map and serialise up to a chunk of records into the spool."""
        messages: list[EncodedMessage] = []
        nbytes = 0
        tenants: list[str] = []
        naming = self._naming
        while inbox and len(tenants) < _ENCODE_CHUNK:
            fields, tenant, now, _ = inbox.popleft()
            tenants.append(tenant)
            try:
                message = encode_fields(fields, tenant, naming, now)
            except InvalidEvent as exc:
                self._too_large(tenant, exc)
                continue
            messages.append(message)
            nbytes += len(message.body)
        self._counters.add_many("accepted", Counter(tenants))  # counted in C, not per event
        with self._room:
            self._room.notify_all()
        self._wait_for_spool_room(nbytes)
        self._spool.put_many(messages)
        if messages:
            touched = list({m.tenant: None for m in messages})
            self._dispatcher.notify_put(touched, nbytes / len(messages))

    def _ingest_some(self, spool: SqliteSpool, inbox: deque[_Entry]) -> None:
        """With a spool file: move journal records, as they are, into the file in one
        transaction of up to ``_INGEST_CHUNK``; they are encoded when leased."""
        records: list[JournalRecord] = []
        dead: list[DeadMessage] = []
        marks: dict[str, int] = {}
        accepted: Counter[str] = Counter()
        nbytes = 0
        while inbox and len(records) < _INGEST_CHUNK:
            data, meta, _, mark = inbox.popleft()
            assert mark is not None
            marks[mark[0]] = mark[1]
            nbytes += len(data)
            for (tenant, kind), payload in zip(meta, unframe(data), strict=True):
                accepted[tenant] += 1
                if len(payload) > _CHECK_SIZE_ABOVE:  # small records always fit in 32 KB
                    try:
                        self._decode_journaled(payload)
                    except InvalidEvent as exc:
                        self._too_large(tenant, exc)
                        dead.append(
                            DeadMessage(tenant, "", kind, bytes(payload), f"too_large: {exc}")
                        )
                        continue
                records.append((tenant, kind, payload))
        n = sum(accepted.values())
        self._counters.add_many("accepted", accepted)
        self._wait_for_spool_room(nbytes)
        self._ingest(spool, records, list(marks.items()), dead)
        self._ingested += n
        with self._room:
            self._room.notify_all()
        if records:
            tenants = list({r[0]: None for r in records})
            # A message is about twice its record: the email goes in twice, plus context.
            self._dispatcher.notify_put(tenants, 2 * nbytes / n)

    def _ingest(
        self,
        spool: SqliteSpool,
        records: list[JournalRecord],
        marks: list[Mark],
        dead: list[DeadMessage],
    ) -> None:
        """Move journaled records into the file; on a database error (disk full...) keep
        trying: meanwhile ``emit`` fills ``max_pending`` and then ``on_full`` applies."""
        while True:
            try:
                spool.put_many((), marks, dead, records)
                return
            except SpoolError as exc:
                if self._stop_encoder:
                    raise  # close(): the journal stays, the next start replays it
                self._log_rarely(
                    "selligent-segment: cannot write the spool file (%s); retrying", exc
                )
                with self._dispatcher.settled:
                    self._dispatcher.settled.wait(0.5)

    def _too_large(self, tenant: str, exc: InvalidEvent) -> None:
        """Count and report an event whose message is over 32 KB."""
        self._counters.add_reason("rejected", tenant, "too_large")
        log.error("selligent-segment: tenant %s: event refused: %s", shown(tenant), exc)
        self._on_failure(DeliveryFailure.too_large(tenant, str(exc)))

    def _wait_for_spool_room(self, nbytes: int) -> None:
        """Hold the encoder (not ``emit``) while the spool is at its size cap."""
        while not self._spool.has_room(nbytes) and not self._stop_encoder:
            self._at_cap = True
            with self._room:
                self._room.notify_all()
            self._log_rarely(
                "selligent-segment: the spool is at its size cap (max_spool_bytes=%d); "
                "accepted events wait in memory, up to max_pending=%d, then on_full=%s applies",
                self._max_spool_bytes,
                self._max_pending,
                self._on_full.value,
            )
            with self._dispatcher.settled:
                self._dispatcher.settled.wait(0.1)
        self._at_cap = False

    def _on_failure(self, failure: DeliveryFailure) -> None:
        if self._user_on_failure is not None:
            Dispatcher._call(self._user_on_failure, failure)

    def _on_pause(self, tenant: str, reason: str) -> None:
        if self._durable is not None:
            self._durable.mark_paused(tenant, reason)
        if self._user_on_pause is not None:
            Dispatcher._call(self._user_on_pause, tenant, reason)

    # -- control ---------------------------------------------------------------------

    def _idle(self) -> bool:
        if self._closed_result is not None:
            return self._closed_result
        return not self._inbox and self._encoder_idle and self._spool.empty()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything now (with a spool file, also what dead processes left in it);
        True when all accepted events are delivered or settled.

        Waits at most ``timeout`` seconds (None: no limit). Events of a paused tenant or in
        backoff keep it False until they are settled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._durable is not None and self._started and not self._stop_encoder:
            self._maintain()  # also what processes that died since the last upkeep left
        if self._inbox:
            self._wake.set()
        self._dispatcher.start_flush()
        try:
            while not self._idle():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                with self._dispatcher.settled:
                    self._dispatcher.settled.wait(0.05 if left is None else min(left, 0.05))
            return True
        finally:
            self._dispatcher.end_flush()

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting, flush up to ``timeout`` seconds, stop the threads. Idempotent:
        a second call waits for the first and returns its result.

        Returns what the flush returned. Events still undelivered after it are reported
        through ``on_failure`` as ``unsent_at_close`` and counted as dropped. A close cut
        short (SIGTERM arriving during it raises ``SystemExit``) is run again whole by the
        exit hook.
        """
        self._closed = True  # stop accepting at once, even while another close runs
        with self._close_lock:
            if self._closed_result is not None:
                return self._closed_result
            done = self.flush(timeout) if self._started else self._idle()
            self._stop_encoder = True
            self._wake.set()
            self._dispatcher.stop(1.0)
            if self._encoder is not None and self._encoder is not threading.current_thread():
                self._encoder.join(1.0)
            if self._durable is not None:
                # A request still out stays leased in the file: the next start sends it again.
                self._dispatcher.abandon()
                self._close_durable(self._durable)
            else:
                assert isinstance(self._spool, MemorySpool)
                self._drop_leftovers(self._spool)
            self._transport.close()
            self._closed_result = done
        unregister(self)
        return done

    def _close_durable(self, spool: SqliteSpool) -> None:
        # Accepted records still in memory are journaled; move them into the file now
        # so the journal can go. If that fails the journal stays for the next start.
        ingested = True
        try:
            while self._inbox:
                self._ingest_some(spool, self._inbox)
            left = spool.stats().messages
        except SpoolError as exc:
            log.error("selligent-segment: %s; accepted events stay in the journal", exc)
            ingested, left = False, -1
        except Exception:
            log.exception("selligent-segment: could not move accepted events into the spool")
            ingested, left = False, -1
        if left:
            log.warning(
                "selligent-segment: %s events stay in the spool %s for the next start",
                "some" if left < 0 else left,
                spool.path,
            )
        spool.close(ingested=ingested and not self._inbox)

    def _drop_leftovers(self, spool: MemorySpool) -> None:
        """Report everything the memory spool still holds as ``unsent_at_close``: queued
        messages, batches of requests still out (their late results then settle nothing),
        and records an ``emit`` racing close() appended after the encoder stopped."""
        left: dict[str, list[EncodedMessage]] = {}

        def collect() -> None:
            left.update(spool.take_all())

        self._dispatcher.abandon(collect)
        while self._inbox:
            fields, tenant, now, _ = self._inbox.popleft()
            self._counters.add("accepted", tenant)
            try:
                message = encode_fields(fields, tenant, self._naming, now)
            except InvalidEvent:
                message = EncodedMessage(tenant, "", fields["type"], b"")
            left.setdefault(tenant, []).append(message)
        for tenant, messages in left.items():
            self._counters.add_reason("dropped", tenant, "unsent_at_close", len(messages))
            log.error(
                "selligent-segment: tenant %s: %d events unsent at close (memory spool)",
                shown(tenant),
                len(messages),
            )
            self._on_failure(DeliveryFailure.unsent_at_close(tenant, messages))

    def set_write_key(self, tenant: str, key: str) -> None:
        """Replace a tenant's write key (or the single key) and resume it if paused."""
        self._keys.set(tenant, key)
        self.resume(tenant if not self._keys.single else self._default_tenant or "")

    def resume(self, tenant: str) -> None:
        """Retry a paused tenant now (e.g. after its key resolver was updated)."""
        if self._durable is not None and not self._closed:
            self._durable.mark_paused(tenant, None)
        self._dispatcher.resume(tenant)

    def stats(self) -> Stats:
        """A snapshot of the counters: accepted, delivered, retried, rejected and dropped
        by reason, refused, queued; totals and per tenant."""
        gone = self._durable is not None and self._closed_result is not None
        queued = {} if gone else dict(self._spool.stats().per_tenant)
        for _, second, _, _ in list(self._inbox):
            if self._durable is None:
                queued[second] = queued.get(second, 0) + 1
            else:
                for tenant, _ in second:
                    queued[tenant] = queued.get(tenant, 0) + 1
        return self._counters.snapshot(queued, self._dispatcher.paused())

    def thread_count(self) -> int:
        """Threads this emitter runs (encoder + senders), 0 before the first emit."""
        return (1 + self._threads) if self._started else 0

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """:meth:`flush` for asyncio code, without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 10.0) -> bool:
        """:meth:`close` for asyncio code, without blocking the event loop."""
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The parent keeps and delivers its own events; the child starts empty, with new
        # locks, threads and connections, so nothing is sent twice.
        if self._closed:
            return
        if self._durable is not None:
            self._durable.abandon()
        self._setup()
        if self._durable is not None:
            self._start()
