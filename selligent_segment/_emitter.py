"""The :class:`Emitter`: the platform's hooks hand events to it; it delivers them.

A facade: records are validated here (``_record``), held by an intake (memory, or the
durable journal: ``intake/``), moved into the spool by the encoder thread, and sent by the
dispatcher's sender threads (``delivery/``). No mode branches live here: the intake is
the only thing that differs between the memory and the durable spool.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment._config import DEFAULTS, EmitterConfig
from selligent_segment._context import ClosedOnExit
from selligent_segment._environment import settings_from_env
from selligent_segment._errors import (
    ConfigurationError,
    EmitterClosed,
    InvalidEvent,
    SelligentSegmentError,
    SpoolFull,
    UnknownTenant,
)
from selligent_segment._naming import EventNaming
from selligent_segment._process_life import (
    in_library_thread,
    install_sigterm_handler,
    register,
    unregister,
)
from selligent_segment._profile import PROFILE_UPDATE, ProfileUpdates
from selligent_segment._record import CallbackRecord, EventKind, normalize
from selligent_segment._results import BulkResult, DeliveryFailure
from selligent_segment._shortcuts import emits_keywords
from selligent_segment.delivery._aside import AsidePolicy
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._endpoint import resolve_endpoint
from selligent_segment.delivery._keys import KeyResolver, WriteKeys
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.delivery._settle import call_back
from selligent_segment.delivery._stats import Counters, Stats
from selligent_segment.delivery._transport import HttpTransport, Transport
from selligent_segment.intake._backpressure import Backpressure
from selligent_segment.intake._encoder import Encoder
from selligent_segment.intake._journal import JournalIntake
from selligent_segment.intake._memory import ENCODE_CHUNK, MemoryIntake
from selligent_segment.intake._postgres import PostgresIntake
from selligent_segment.intake._protocol import Accepted, Downstream, Intake
from selligent_segment.spool._postgres import is_postgres_url
from selligent_segment.spool._protocol import OnFull
from selligent_segment.spool._schema import spool_path

__all__ = ["Emitter"]


def _with_update(fields: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The fields of the identify that goes with a record (see ``_profile.py``)."""
    marked = dict(fields)
    marked[PROFILE_UPDATE] = update
    return marked


def _accepted(
    fields: dict[str, Any], identify: dict[str, Any] | None, tenant: str, at: float | None
) -> list[Accepted]:
    """A record as its intake takes it, with the fields of its identify when it has one
    (see :meth:`Emitter._identify_of`): one write, accepted or refused together."""
    if identify is None:
        return [(fields, tenant, at)]
    return [(fields, tenant, at), (identify, tenant, at)]


def _refused_tenant(tenant: str | None) -> InvalidEvent | UnknownTenant:
    """Why a record of ``tenant`` is refused: None is no tenant where ``write_keys`` names
    several (no default), anything else a tenant without a write key."""
    if tenant is None:
        return InvalidEvent("tenant", "required: write_keys names no 'default' tenant")
    return UnknownTenant(tenant)


class Emitter(ClosedOnExit):
    """Accepts email callbacks and delivers them to each tenant's Segment workspace.

    Guarantees: ``emit`` validates the record, then only appends it to an in-memory
    queue (with a spool file, after one ``write(2)`` to this process's journal, in journal
    order with other threads' writes): it never waits on the network, another process or
    the database (with ``on_full="block"`` it may wait up to ``block_timeout`` for room,
    or until :meth:`close`);
    with a ``postgresql://`` spool it writes the row (one short transaction) before it
    returns, or raises SpoolError, and ``on_full`` applies when the table holds
    ``max_spool_bytes``.
    Every accepted event ends delivered, or reported through ``on_failure`` and counted
    in :meth:`stats`; none disappears silently. A fixed pool of ``threads`` senders serves
    every tenant; one tenant's outage, 429s or revoked key never delays another's events.

    Its keyword arguments are the settings of :class:`EmitterConfig`, which documents
    each one and its default (written there once) and validates them all when the
    Emitter is made (:class:`ConfigurationError` names the setting).

    The per-kind methods (:meth:`delivered`, :meth:`opened`, :meth:`link_clicked`,
    :meth:`unsubscribed`, :meth:`bounced`, :meth:`marked_as_spam`) each :meth:`emit` one
    record given as keywords; a keyword set to None counts as absent. The keywords common
    to every kind: ``tenant``, ``email`` and/or ``user_id`` (at least one), ``event_id``
    (makes the ``messageId`` stable), ``timestamp`` (ISO-8601 text with an offset, or an
    aware datetime), ``email_id``, ``email_subject``, ``campaign_id``, ``campaign_name``,
    ``ip``, ``user_agent``, ``properties``, ``integrations`` and ``context``
    (``docs/records.md``); each method names its kind's own.
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
        profile_updates: bool | ProfileUpdates | None = DEFAULTS.profile_updates,
        batch: BatchPolicy | None = None,
        retry: RetryPolicy | None = DEFAULTS.retry,
        aside: AsidePolicy | None = None,
        threads: int = DEFAULTS.threads,
        max_requests_per_second: float = DEFAULTS.max_requests_per_second,
        timeout: float = DEFAULTS.timeout,
        request_deadline: float | None = DEFAULTS.request_deadline,
        proxy: str | bool | None = DEFAULTS.proxy,
        ca_bundle: str | os.PathLike[str] | None = DEFAULTS.ca_bundle,
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
        if aside is not None:
            policies["aside"] = aside
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
                profile_updates=profile_updates,
                retry=retry,
                threads=threads,
                max_requests_per_second=max_requests_per_second,
                timeout=timeout,
                request_deadline=request_deadline,
                proxy=proxy,
                ca_bundle=ca_bundle,
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Emitter:
        """An Emitter configured by environment variables, for production start-up code.

        Reads ``os.environ`` (or ``environ``, a mapping, e.g. in tests): the write key
        (``SEGMENT_WRITE_KEY``) or the keys file (``SELLIGENT_SEGMENT_WRITE_KEYS``), and
        ``SELLIGENT_SEGMENT_ENDPOINT``, ``_REGION``, ``_SPOOL``, ``_THREADS``, ``_TIMEOUT``
        and ``_PROFILE`` (the table: ``docs/hooks.md``). An unset or empty variable keeps
        the default. The proxy and CA bundle variables (``HTTPS_PROXY``, ``NO_PROXY``,
        ``SSL_CERT_FILE``...) are read from the same mapping, never from ``os.environ``
        when ``environ`` is given. ``overrides`` are any of the constructor's keyword
        arguments and win over their variable (``write_key=`` or ``write_keys=`` over both
        key variables).

        Raises :class:`ConfigurationError` naming the variable and the reason (never
        showing a key) for a value it cannot use, or when no key is given at all.
        """
        settings, sources = settings_from_env(os.environ if environ is None else environ, overrides)
        try:
            return cls(**settings)
        except ConfigurationError as exc:
            variable = sources.get(exc.setting)
            if variable is None:
                raise
            raise ConfigurationError(variable, exc.reason) from None

    @property
    def config(self) -> EmitterConfig:
        """The settings this Emitter was made with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun (``emit`` then raises EmitterClosed)."""
        return self._closed

    def _init(self, config: EmitterConfig) -> None:
        self._config = config
        self._keys = WriteKeys(config.write_key, config.write_keys)
        self._endpoint = resolve_endpoint(
            config.endpoint, config.region, config.allow_insecure_http
        )
        self._max_pending = config.max_pending
        self._exit_timeout = config.exit_timeout
        self._clock: Clock = config.clock or SYSTEM_CLOCK
        self._default_tenant = self._keys.default_tenant()
        self._profiles = config.profile_updates
        self._setup()
        register(self)
        if config.handle_sigterm:
            install_sigterm_handler()
        if self._intake.durable:
            self._start()  # deliver what earlier runs or dead processes left in the file

    def _setup(self) -> None:
        """(Re)build every piece of runtime state: at construction and after fork."""
        config = self._config
        self._closed = False
        self._started = False
        self._closed_result: bool | None = None
        self._start_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closing: threading.Thread | None = None  # the thread inside close(), if any
        self._close_begun = False  # a library thread began close() on a thread of its own
        self._counters = Counters()
        self._backpressure = Backpressure(
            max_pending=config.max_pending,
            on_full=config.on_full,
            block_timeout=config.block_timeout,
            max_spool_bytes=config.max_spool_bytes,
            counters=self._counters,
            report=self._on_failure,
        )
        downstream = Downstream(self._counters, self._backpressure, self._on_failure)
        self._intake: Intake
        if is_postgres_url(config.spool):
            self._intake = PostgresIntake(
                url=str(config.spool),
                max_spool_bytes=config.max_spool_bytes,
                naming=config.naming,
                downstream=downstream,
            )
        elif config.durable:
            self._intake = JournalIntake(
                path=spool_path(config.spool),
                max_spool_bytes=config.max_spool_bytes,
                fsync=config.fsync,
                naming=config.naming,
                downstream=downstream,
            )
        else:
            self._intake = MemoryIntake(
                max_spool_bytes=config.max_spool_bytes,
                naming=config.naming,
                downstream=downstream,
            )
        self._transport: Transport = config.transport or HttpTransport(
            max_connections=config.threads,
            read_timeout=config.timeout,
            deadline=config.request_deadline,
            gzip=config.batch.gzip,
            proxy=config.proxy,
            ca_certs=config.ca_bundle,
        )
        self._dispatcher = downstream.dispatcher = Dispatcher(
            spool=self._intake.spool,
            keys=self._keys,
            endpoint=self._endpoint,
            transport=self._transport,
            batch=config.batch,
            retry=config.retry_policy,
            aside=config.aside,
            threads=config.threads,
            max_requests_per_second=config.max_requests_per_second,
            counters=self._counters,
            on_failure=self._on_failure,
            on_pause=self._on_pause,
            on_resume=self._on_resume,
            clock=self._clock,
        )
        self._encoder = Encoder(
            self._intake,
            self._dispatcher,
            linger=config.batch.linger,
            max_pending=config.max_pending,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Emitter {self._endpoint} {self._keys!r} {state}>"

    # -- accepting -------------------------------------------------------------------

    def emit(self, record: CallbackRecord | Mapping[str, Any], *, connection: Any = None) -> bool:
        """Accept one callback record (a :class:`CallbackRecord` or its dict form).

        Returns True when accepted, False when dropped by ``on_full="drop_newest"``.
        Raises InvalidEvent (naming the field), UnknownTenant, SpoolFull or EmitterClosed;
        a refused record never affects another. With a ``postgresql://`` spool,
        ``connection`` (the caller's psycopg connection) makes the event part of the
        caller's open transaction: committed with it, never sent after a rollback (the
        transactional outbox; see ``docs/scaling.md``).
        """
        if self._closed:
            raise EmitterClosed("emit() after close(); the event was not accepted")
        # self._check(record), inlined: a method call is a tenth of this path's cost.
        fields = record._fields if isinstance(record, CallbackRecord) else normalize(record)
        tenant = fields.get("tenant") or self._default_tenant
        if tenant is None or not self._keys.known(tenant):
            raise _refused_tenant(tenant)
        profiles = self._profiles
        identify = None if profiles is None else self._identify_of(fields)
        if connection is not None:
            at = None if "timestamp" in fields else time.time()
            return self._outbox().accept_in(connection, _accepted(fields, identify, tenant, at))
        intake = self._intake
        if intake.pending() >= self._max_pending and not self._backpressure.wait_for_room(
            intake.pending, tenant
        ):
            return False
        if self._closed:  # closed while it waited for room (on_full="block")
            raise EmitterClosed("the emitter closed while emit() waited; not accepted")
        now = None if "timestamp" in fields else time.time()
        if identify is None:
            accepted = intake.accept(fields, tenant, now)
        else:  # one journal write: the track and its identify are accepted together
            accepted = intake.accept_many(_accepted(fields, identify, tenant, now))
        if self._closed:  # close() began meanwhile: it may have looked already
            intake.late()
        if not accepted:
            return False  # a table at max_spool_bytes, on_full="drop_newest"
        encoder = self._encoder
        if encoder.bulk_calls:  # an emit_many under way must not hold this record back
            encoder.other_call()
        elif encoder.idle:
            encoder.wake()
        if not self._started:
            self._start()
        return True

    def _check(self, record: CallbackRecord | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        fields = record._fields if isinstance(record, CallbackRecord) else normalize(record)
        tenant = fields.get("tenant") or self._default_tenant
        if tenant is None or not self._keys.known(tenant):
            raise _refused_tenant(tenant)
        return fields, tenant

    def _identify_of(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The fields of the identify that goes with the record ``fields`` (its profile
        update, ``_profile.py``); None with profile updates off or when it sets none."""
        profiles = self._profiles
        update = None if profiles is None else profiles.update_for(fields)
        return None if update is None else _with_update(fields, update)

    def _outbox(self) -> PostgresIntake:
        intake = self._intake
        if not isinstance(intake, PostgresIntake):
            raise ConfigurationError("connection", "an outbox insert needs a postgresql:// spool")
        if not self._started:
            self._start()
        return intake

    def emit_many(
        self, records: Iterable[CallbackRecord | Mapping[str, Any]], *, connection: Any = None
    ) -> BulkResult:
        """Accept many records; cheaper per record than :meth:`emit` (one journal write
        per chunk with a durable spool).

        Invalid records and those of unknown tenants are refused one by one and returned
        with their index; the others are accepted. When the spool is full the ``on_full``
        policy applies to the rest: SpoolFull (its ``next_index`` says where to resume,
        see :class:`SpoolFull`), a wait, or dropping them (counted in ``refused`` as
        SpoolFull). A ``close()`` during the call raises EmitterClosed, with the same
        ``accepted``, ``next_index`` and ``refused`` as SpoolFull.
        """
        if self._closed:
            raise EmitterClosed("emit_many() after close(); no event was accepted")
        if connection is not None:
            return self._emit_many_in(records, connection)
        refused: list[tuple[int, SelligentSegmentError]] = []
        chunk: list[tuple[int, dict[str, Any], str]] = []
        accepted = 0
        profiles = self._profiles
        self._encoder.enter_bulk()
        try:
            for index, record in enumerate(records):
                try:
                    fields, tenant = self._check(record)
                except (InvalidEvent, UnknownTenant) as exc:
                    refused.append((index, exc))
                    continue
                chunk.append((index, fields, tenant))
                if profiles is not None and (identify := self._identify_of(fields)) is not None:
                    chunk.append((index, identify, tenant))  # the same index: together
                if len(chunk) >= ENCODE_CHUNK:
                    accepted += self._accept_chunk(chunk, refused, accepted)
                    chunk = []
            if chunk:
                accepted += self._accept_chunk(chunk, refused, accepted)
        except SpoolFull as exc:  # where the caller resumes: the chunk that was refused
            exc.next_index = chunk[0][0]
            exc.refused = tuple(pair for pair in refused if pair[0] < exc.next_index)
            raise
        except EmitterClosed:  # close() cut the call off: the same, said accurately
            closed = EmitterClosed(
                f"the emitter closed during emit_many(): {accepted} records were accepted "
                f"before it; none from index {chunk[0][0]} on was accepted"
            )
            closed.accepted = accepted
            closed.next_index = chunk[0][0]
            closed.refused = tuple(pair for pair in refused if pair[0] < closed.next_index)
            raise closed from None
        finally:
            self._encoder.leave_bulk()
        return BulkResult(accepted, tuple(refused))

    def _emit_many_in(
        self, records: Iterable[CallbackRecord | Mapping[str, Any]], connection: Any
    ) -> BulkResult:
        """emit_many into the caller's open transaction: one COPY of the valid records."""
        intake = self._outbox()
        refused: list[tuple[int, SelligentSegmentError]] = []
        entries: list[Accepted] = []
        kept: list[int] = []
        now = time.time()
        for index, record in enumerate(records):
            try:
                fields, tenant = self._check(record)
            except (InvalidEvent, UnknownTenant) as exc:
                refused.append((index, exc))
                continue
            at = None if "timestamp" in fields else now
            entries += _accepted(fields, self._identify_of(fields), tenant, at)
            kept.append(index)
        if entries and not intake.accept_in(connection, entries):
            dropped = SpoolFull("spool full: dropped (on_full=drop_newest)")
            refused.extend((index, dropped) for index in kept)
            refused.sort(key=lambda pair: pair[0])
            return BulkResult(0, tuple(refused))
        return BulkResult(len(kept), tuple(refused))

    def _accept_chunk(
        self,
        chunk: Sequence[tuple[int, dict[str, Any], str]],
        refused: list[tuple[int, SelligentSegmentError]],
        accepted_before: int,
    ) -> int:
        intake = self._intake
        pressure = self._backpressure
        if intake.pending() >= self._max_pending and not (
            intake.durable and pressure.wait_for_ingest(intake.pending, self._is_closed)
        ):
            records = Counter(t for _, f, t in chunk if PROFILE_UPDATE not in f)
            try:
                room = pressure.wait_for_room(
                    intake.pending, chunk[0][2], records.total(), tenants=records
                )
            except SpoolFull as exc:
                exc.accepted = accepted_before
                raise
            if not room:
                dropped = SpoolFull("spool full: dropped (on_full=drop_newest)")
                refused.extend((i, dropped) for i, f, _ in chunk if PROFILE_UPDATE not in f)
                return 0
        if self._closed:  # closed while it waited for room
            raise EmitterClosed("the emitter closed while emit_many() waited; not accepted")
        now = time.time()
        entries: list[Accepted] = [(f, t, None if "timestamp" in f else now) for _, f, t in chunk]
        try:
            taken = intake.accept_many(entries)
        except SpoolFull as exc:  # a table at max_spool_bytes, on_full="raise"
            exc.accepted = accepted_before
            raise
        if self._closed:  # close() began meanwhile: it may have looked already
            intake.late()
        if not taken:  # a table at max_spool_bytes, on_full="drop_newest"
            dropped = SpoolFull("spool full: dropped (on_full=drop_newest)")
            refused.extend((i, dropped) for i, f, _ in chunk if PROFILE_UPDATE not in f)
            return 0
        if self._encoder.idle:
            self._encoder.wake()
        if not self._started:
            self._start()
        if self._profiles is None:
            return len(entries)
        return sum(1 for f, _, _ in entries if PROFILE_UPDATE not in f)  # records, not identifies

    def _is_closed(self) -> bool:
        return self._closed

    def _emit_kind(self, kind: EventKind, given: dict[str, Any]) -> bool:
        # The plain body of the per-kind methods; @emits_keywords (_shortcuts) runs a twin.
        fields = {k: v for k, v in given.items() if v is not None and k != "self"}
        fields["type"] = kind
        return self.emit(fields)

    # The per-kind methods take the record's fields as keywords: those of every kind, then
    # the kind's own (_record._PROPERTY_FIELDS), then ip, user_agent and the three objects.
    # A keyword set to None counts as absent. tests/test_emitter_methods.py checks these
    # signatures against the record's fields.

    @emits_keywords(EventKind.DELIVERED)
    def delivered(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Delivered`` record, given as keywords: the MTA accepted the message.

        Returns and raises what :meth:`emit` does. Takes the common keywords only (see
        :class:`Emitter`).
        """
        return self._emit_kind(EventKind.DELIVERED, locals())

    @emits_keywords(EventKind.OPENED)
    def opened(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Opened`` record, given as keywords: the tracking pixel was loaded.

        Returns and raises what :meth:`emit` does. Takes the common keywords only (see
        :class:`Emitter`; ``ip`` and ``user_agent`` when known).
        """
        return self._emit_kind(EventKind.OPENED, locals())

    @emits_keywords(EventKind.LINK_CLICKED)
    def link_clicked(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        link_url: str | None = None,
        link_id: str | int | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Link Clicked`` record, given as keywords: a link was followed.

        Returns and raises what :meth:`emit` does. Takes the common keywords (see
        :class:`Emitter`), and ``link_url`` (the URL clicked) and ``link_id`` (the
        link's id).
        """
        return self._emit_kind(EventKind.LINK_CLICKED, locals())

    @emits_keywords(EventKind.UNSUBSCRIBED)
    def unsubscribed(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        list_id: str | int | None = None,
        list_name: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Unsubscribed`` record, given as keywords: the recipient unsubscribed.

        Returns and raises what :meth:`emit` does. Takes the common keywords (see
        :class:`Emitter`), and ``list_id`` (the list unsubscribed from) and
        ``list_name`` (its name).
        """
        return self._emit_kind(EventKind.UNSUBSCRIBED, locals())

    @emits_keywords(EventKind.BOUNCED)
    def bounced(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        bounce_type: str | None = None,
        bounce_reason: str | None = None,
        smtp_status: str | int | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Bounced`` record, given as keywords: the message bounced.

        Returns and raises what :meth:`emit` does. Takes the common keywords (see
        :class:`Emitter`), and ``bounce_type`` (``"hard"`` or ``"soft"``, any
        case), ``bounce_reason`` (the diagnostic text, ``"550 5.1.1 user unknown"``) and
        ``smtp_status`` (``"5.1.1"``).
        """
        return self._emit_kind(EventKind.BOUNCED, locals())

    @emits_keywords(EventKind.MARKED_AS_SPAM)
    def marked_as_spam(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        event_id: str | int | None = None,
        timestamp: str | datetime | None = None,
        email_id: str | int | None = None,
        email_subject: str | None = None,
        campaign_id: str | int | None = None,
        campaign_name: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        properties: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """``emit`` an ``Email Marked as Spam`` record, given as keywords: a spam complaint.

        Returns and raises what :meth:`emit` does. Takes the common keywords only (see
        :class:`Emitter`).
        """
        return self._emit_kind(EventKind.MARKED_AS_SPAM, locals())

    # -- background work -------------------------------------------------------------

    def _start(self, *, closing: bool = False) -> None:
        """Start the encoder and the senders, once; never once close() began, but by
        close() itself (``closing``) when it finds records nothing started to send.
        close() takes the same lock: a start is whole before close() looks, or none."""
        with self._start_lock:
            if self._started or (self._closed and not closing):
                return
            self._encoder.start()
            self._dispatcher.start()
            self._started = True

    def _on_failure(self, failure: DeliveryFailure) -> None:
        callback = self._config.on_failure
        if callback is not None:
            call_back(callback, failure)

    def _on_resume(self, tenant: str) -> None:
        self._intake.mark_paused(tenant, None)

    def _on_pause(self, tenant: str, reason: str) -> None:
        self._intake.mark_paused(tenant, reason)
        callback = self._config.on_pause
        if callback is not None:
            call_back(callback, tenant, reason)

    # -- control ---------------------------------------------------------------------

    def _idle(self) -> bool:
        if self._closed_result is not None:
            return self._closed_result
        return not self._intake.has_work() and self._encoder.idle and self._intake.spool.empty()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything now (with a spool file, also what dead processes left in it);
        True when all accepted events are delivered or settled.

        Waits at most ``timeout`` seconds (None: no limit). Events of a paused tenant or in
        backoff keep it False until they are settled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._started and not self._encoder.stopping:
            self._encoder.maintain()  # also what processes that died since the last upkeep left
        if self._intake.has_work():
            self._encoder.wake()
        dispatcher = self._dispatcher
        dispatcher.start_flush()
        try:
            while not self._idle():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                with dispatcher.settled:
                    dispatcher.settled.wait(0.05 if left is None else min(left, 0.05))
            return True
        finally:
            dispatcher.end_flush()

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting, flush up to ``timeout`` seconds, stop the threads. Idempotent:
        a second call waits for the first and returns its result.

        Returns what the flush returned. Events still undelivered after it are reported
        through ``on_failure`` as ``unsent_at_close`` and counted as dropped (with a spool
        file they stay in it for the next start). A close cut short (SIGTERM arriving
        during it raises ``SystemExit``) is run again whole by the exit hook.

        From a callback (``on_failure``, ``on_pause``) it never waits for itself: called
        by the close under way in the same thread (its ``unsent_at_close`` report, or the
        exit hook's), it returns False at once (the first close's result once it is
        known); called on one of this emitter's own threads (the encoder's or a
        sender's), it begins the close on a new thread and returns False at once (the
        result once known): a later close() elsewhere waits for it and returns its result.
        """
        self._closed = True  # stop accepting at once, even while another close runs
        self._backpressure.close()  # wake emits waiting for room: they raise EmitterClosed
        me = threading.current_thread()
        if self._closing is me:  # a callback of this very close (its report)
            return bool(self._closed_result)
        if self._encoder.owns(me) or self._dispatcher.owns(me):
            if self._closed_result is not None:
                return self._closed_result
            if self._closing is not None or self._close_begun:
                return False  # a close is under way already: its result comes later
            # The flush would wait for this very thread: close on another one.
            self._close_begun = True
            threading.Thread(
                target=in_library_thread(lambda: self.close(timeout)),
                name="selligent-segment-close",
                daemon=True,
            ).start()
            return False
        with self._close_lock:
            if self._closed_result is not None:
                return self._closed_result
            self._closing = me
            try:
                done = self._close_held(timeout)
            finally:
                self._closing = None
        unregister(self)  # not after a close cut short: the exit hook runs it again
        return done

    def _close_held(self, timeout: float | None) -> bool:
        """close() under its lock: flush, stop the threads, report what is left."""
        with self._start_lock:  # a start under way ends first; none begins after this
            started = self._started
        if not started and not self._idle():  # accepted by an emit that close overtook
            self._start(closing=True)
            started = True
        done = self.flush(timeout) if started else self._idle()
        self._encoder.stopping = True
        self._encoder.wake()
        self._dispatcher.stop(1.0)
        stepping = not self._encoder.stop(1.0)  # still in a step: it holds records
        if self._intake.close(self._dispatcher, encoder_busy=stepping) or stepping:
            done = False  # events were reported unsent (maybe by a close cut short)
        self._transport.close()
        self._closed_result = done
        return done

    def set_write_key(self, tenant: str, key: str) -> None:
        """Replace a tenant's write key (or the single key) and resume it if paused (the
        single key serves every tenant: each paused one is resumed)."""
        self._keys.set(tenant, key)
        if not self._keys.single:
            self.resume(tenant)
            return
        for paused in {self._default_tenant or "", tenant, *self._dispatcher.paused()}:
            self.resume(paused)

    def resume(self, tenant: str) -> None:
        """Retry a paused tenant now (e.g. after its key resolver was updated); a tenant
        that is not paused keeps the wait it is in (a server's Retry-After, a backoff)."""
        if not self._closed:
            self._intake.mark_paused(tenant, None)
        self._dispatcher.resume(tenant)

    def stats(self) -> Stats:
        """A snapshot of the counters: accepted, delivered, retried, rejected and dropped
        by reason, refused, queued; totals and per tenant."""
        return self._counters.snapshot(self._intake.queued(), self._dispatcher.paused())

    def _spool_unwritable(self) -> bool:
        """True while the encoder cannot write the spool file (for observability)."""
        return self._backpressure.writes_failing()

    def _stats_now(self) -> Stats:
        """:meth:`stats`, never waiting for the spool (for observability): while a write
        holds it, the counters without the backlog (``queued`` empty)."""
        queued = self._intake.queued_now()
        return self._counters.snapshot(queued or {}, self._dispatcher.paused())

    def thread_count(self) -> int:
        """Threads this emitter runs (encoder + senders), 0 before the first emit."""
        return (1 + self._config.threads) if self._started else 0

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """:meth:`flush` for asyncio code, without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 10.0) -> bool:
        """:meth:`close` for asyncio code, without blocking the event loop."""
        return await asyncio.to_thread(self.close, timeout)

    def _unusable_after_fork(self) -> None:
        # Its rebuild failed in a forked child: closed there, emit raises EmitterClosed,
        # close() returns False at once and reports nothing (what it holds is the
        # parent's, which the parent delivers).
        self._closed = True
        self._closed_result = False
        self._close_lock = threading.Lock()  # the parent's copy may be held
        self._closing = None

    def _after_fork_in_child(self) -> None:
        # The parent keeps and delivers its own events; the child starts empty, with new
        # locks, threads and connections, so nothing is sent twice.
        if self._closed:  # the parent's to finish; its close lock may be held in the copy
            self._close_lock = threading.Lock()  # the copy of one a parent thread held
            self._start_lock = threading.Lock()
            self._closing = None
            if self._closed_result is None:  # a close under way in the parent: not here
                self._closed_result = False
            unregister(self)
            return
        self._intake.abandon()
        self._setup()
        if self._intake.durable:
            self._start()
