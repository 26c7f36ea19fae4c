"""The loader: mapped rows journaled durably, moved into the spool file, and loaded into
each customer's Selligent lists by the library's own dispatcher.

One job: wire the shared seams for the destination: a
:class:`~selligent_segment.spool._sqlite.SqliteSpool` (one queue per tenant, the rows'
payloads from :mod:`._rows`), a :class:`~selligent_segment.delivery._dispatcher.Dispatcher`
(the fixed sender pool, fair round-robin, the per-key request cap, backoff, pauses) posting
through :class:`~._transport.SelligentTransport` to each tenant's own instance, and one
ingest thread that moves journaled rows into the file in group commits and runs the
spool's upkeep (recovering what a killed process left) about once a second.

Guarantees: when :meth:`Loader.accept` returns, its rows and dead letters are in this
process's journal (a ``write(2)``; with ``fsync`` on disk): a ``kill -9`` at any instant
after loses none, the next process on the file replays them. A row leaves the file
loaded, or as a dead letter with its reason. :meth:`Loader.close` flushes for a bounded
time and leaves the rest in the file for the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment._errors import ConfigurationError, SpoolError, SpoolFull, shown
from selligent_segment._mapping import EncodedMessage, _new_message
from selligent_segment._process_life import in_library_thread
from selligent_segment._results import DeliveryFailure
from selligent_segment.delivery._aside import AsidePolicy
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.delivery._keys import WriteKeys
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.delivery._stats import Counters, Stats
from selligent_segment.delivery._transport import Transport
from selligent_segment.destination._config import DestinationConfig
from selligent_segment.destination._mapping import MappedRow
from selligent_segment.destination._rows import decode, row_payload
from selligent_segment.destination._transport import SelligentTransport
from selligent_segment.spool._journal import Mark, frame
from selligent_segment.spool._sqlite import DeadMessage, SqliteSpool
from selligent_segment.spool._statements import kind_of

__all__ = ["DeadRow", "Loader", "LoaderSettings"]

log = logging.getLogger("selligent_segment.destination")

#: Rows per ``data/load`` request (Selligent documents no maximum: keep it modest).
DEFAULT_BATCH_SIZE = 1000
#: Seconds the first row of an idle tenant waits for company before its load is sent.
DEFAULT_LINGER = 0.5
#: Selligent's documented cap: requests per minute per API key, across all paths.
DEFAULT_REQUESTS_PER_MINUTE = 2500
#: Sender threads shared by every tenant.
DEFAULT_THREADS = 4
#: The spool file's size cap (bytes); over it, the receiver answers 503.
DEFAULT_MAX_SPOOL_BYTES = 1024**3
#: The part of ``max_spool_bytes`` (one in this many) only tenants not behind the backlog
#: may fill: past the rest, a paused tenant, or one holding more than an even share of the
#: rows waiting, is refused, so one customer's outage does not refuse every customer.
_RESERVE_PART = 4
#: Seconds the tenants refused past the reserve are judged for (a count of the spool).
_CULPRITS_FOR = 1.0
_INGEST_CHUNK = 4096
#: No batch set aside to wait out its own Retry-After while its tenant loads on.
_IN_ORDER = AsidePolicy(max_batches=0)
_MAINTAIN_EVERY = 1.0


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(attribute.name, f"must be a positive number, not {shown(value)}")


@attrs.frozen
class LoaderSettings:
    """How rows are loaded; every field checked on construction (ConfigurationError
    naming it).

    * ``batch_size``: rows per tenant per turn, hence at most per ``data/load`` (1,000).
    * ``linger``: seconds an idle tenant's first row waits for a fuller batch (0.5).
    * ``requests_per_minute``: the cap per API key (2,500, Selligent's).
    * ``threads``: sender threads shared fairly by every tenant (4).
    * ``max_spool_bytes``: the spool file's cap; over it ``accept`` raises SpoolFull (1 GiB).
      Its last quarter is for the tenants not behind the backlog: past three quarters, a
      paused tenant, or one holding more than an even share of the rows waiting, is
      refused (SpoolFull) while the others are accepted up to the cap.
    * ``retry``: backoff and give-up budgets (the library's :class:`RetryPolicy`).
    * ``fsync``: fsync each journal write (a power cut, not only a kill, loses nothing).
    """

    batch_size: int = attrs.field(default=DEFAULT_BATCH_SIZE, validator=_positive)
    linger: float = attrs.field(default=DEFAULT_LINGER)
    requests_per_minute: float = attrs.field(
        default=DEFAULT_REQUESTS_PER_MINUTE, validator=_positive
    )
    threads: int = attrs.field(default=DEFAULT_THREADS, validator=_positive)
    max_spool_bytes: int = attrs.field(default=DEFAULT_MAX_SPOOL_BYTES, validator=_positive)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    fsync: bool = False


@attrs.frozen
class DeadRow:
    """An event refused at the door, to keep as a dead letter: its tenant, kind
    (``identify``/``track``, or another type as sent), messageId, the journal payload
    (from :func:`~._rows.dead_payload`) and the reason."""

    tenant: str
    kind: str
    message_id: str
    payload: bytes = attrs.field(repr=False)
    reason: str


#: One journal write waiting for the ingest thread: the rows as spooled messages (each
#: body its journal payload), the dead letters, the mark, the bytes written.
_Write = tuple[list[EncodedMessage], list[DeadMessage], Mark, int]


class Loader:
    """Rows in, rows loaded: see the module. Thread-safe; :meth:`accept` never waits on
    the network."""

    def __init__(
        self,
        config: DestinationConfig,
        spool: str | Path,
        settings: LoaderSettings | None = None,
        *,
        transport: Transport | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_failure: Callable[[DeliveryFailure], None] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings = settings or LoaderSettings()
        self.batch = BatchPolicy(
            max_messages=min(settings.batch_size, 2500), linger=settings.linger
        )
        self.spool = SqliteSpool(
            Path(spool), max_bytes=settings.max_spool_bytes, decoder=decode, fsync=settings.fsync
        )
        self.path = self.spool.path
        self.counters = Counters()
        self.transport = transport if transport is not None else SelligentTransport()
        self._on_failure = on_failure
        self.dispatcher = Dispatcher(
            spool=self.spool,
            keys=WriteKeys(None, self._api_key),
            endpoint=self._endpoint,
            transport=self.transport,
            batch=self.batch,
            retry=settings.retry,
            threads=int(settings.threads),
            max_requests_per_second=settings.requests_per_minute / 60.0,
            counters=self.counters,
            on_failure=self._failed,
            on_pause=self._paused,
            on_resume=self._resumed,
            clock=clock,
            # One tenant's batches load one at a time, in order, a failed one retried
            # before the next goes: an older identify never lands after a newer one
            # (nor a track row before its contact's identify).
            max_in_flight=1,
            aside=_IN_ORDER,
        )
        self._inbox: list[_Write] = []
        self._lock = threading.Lock()  # journal order = inbox order
        self._wake = threading.Condition(threading.Lock())
        self._pending_bytes = 0
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._culprits: tuple[float, frozenset[str]] | None = None

    def __repr__(self) -> str:
        return f"<Loader {str(self.path)!r} tenants={list(self.config.tenants)}>"

    # -- the dispatcher's view of tenants --------------------------------------------

    def _api_key(self, tenant: str) -> str | None:
        config = self.config.tenants.get(tenant)
        return None if config is None else config.api_key()

    def _endpoint(self, tenant: str) -> str:
        config = self.config.tenants[tenant]
        return f"{config.selligent_url}/Portal/Api/organizations/{quote(config.organization)}"

    def _failed(self, failure: DeliveryFailure) -> None:
        if self._on_failure is not None:
            self._on_failure(failure)

    def _paused(self, tenant: str, reason: str | None) -> None:
        try:
            self.spool.mark_paused(tenant, reason)
        except SpoolError as exc:
            log.error("%s", exc)

    def _resumed(self, tenant: str) -> None:
        self._paused(tenant, None)

    # -- life ------------------------------------------------------------------------

    def start(self) -> Loader:
        """Start the senders and the ingest thread (recovering what the file holds)."""
        if self._thread is not None:
            return self
        self.dispatcher.start()
        self._maintain()
        self._thread = threading.Thread(
            target=in_library_thread(self._run),
            name="selligent-segment-destination-ingest",
            daemon=True,
        )
        self._thread.start()
        return self

    def has_room(self, nbytes: int, tenants: Collection[str] = ()) -> bool:
        """True when ``nbytes`` more fit under ``max_spool_bytes`` now (journaled rows not
        yet in the file counted); for rows of ``tenants``, when :meth:`accept` would take
        them (the reserve: see :class:`LoaderSettings`)."""
        if not tenants:
            return self.spool.has_room(nbytes + self._pending_bytes)
        reserve = self.settings.max_spool_bytes // _RESERVE_PART
        if self.spool.has_room(nbytes + self._pending_bytes + reserve):
            return True
        if not self.spool.has_room(nbytes + self._pending_bytes):
            return False
        return self._behind().isdisjoint(tenants)

    def _behind(self) -> frozenset[str]:
        """The tenants behind the backlog: paused, or holding more rows than an even share
        of those waiting; judged once per :data:`_CULPRITS_FOR` seconds at most (counting
        reads the whole spool)."""
        now = self._clock.monotonic()
        if self._culprits is not None and now - self._culprits[0] < _CULPRITS_FOR:
            return self._culprits[1]
        queued = self.queued()
        total = sum(queued.values())
        n = len(self.config.tenants)
        behind = {t for t, q in queued.items() if q * n > total}
        culprits = frozenset(behind | set(self.paused()))
        self._culprits = (now, culprits)
        return culprits

    def accept(self, rows: Sequence[MappedRow], dead: Sequence[DeadRow] = ()) -> None:
        """Journal ``rows`` (to load) and ``dead`` (dead letters) in one write; durable
        when this returns. Raises SpoolFull over the size cap (or past three quarters of
        it, for a tenant behind the backlog: see :class:`LoaderSettings`), SpoolError when
        the journal cannot be written (then nothing of the call was accepted)."""
        if not rows and not dead:
            return
        if self._closed:
            raise SpoolError(f"{self.path}: the loader is closed")
        payloads = [row_payload(r) for r in rows]
        data = b"".join([frame(p) for p in payloads] + [frame(d.payload) for d in dead])
        tenants = {r.tenant for r in rows} | {d.tenant for d in dead}
        if not self.has_room(len(data), tenants):
            raise SpoolFull(f"the spool file {self.path} is full")
        # Spooled as messages (messageId and kind set, the payload as body): a lease then
        # reads no row. A replay of the journal spools them as records, which ``decode``
        # makes the same messages.
        records = [
            _new_message(r.tenant, r.message_id, r.kind, p)
            for r, p in zip(rows, payloads, strict=True)
        ]
        letters = [DeadMessage(d.tenant, d.message_id, d.kind, d.payload, d.reason) for d in dead]
        with self._lock:
            try:
                mark = self.spool.accept_frames(data)
            except OSError as exc:
                raise SpoolError(f"{self.path}: cannot write the journal: {exc.strerror}") from None
            self._inbox.append((records, letters, mark, len(data)))
            self._pending_bytes += len(data)
        self.counters.add_many("accepted", Counter(r.tenant for r in rows))
        for d in dead:
            self.counters.add_reason("rejected", d.tenant, "refused")
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        next_maintain = time.monotonic() + _MAINTAIN_EVERY
        while True:
            with self._wake:
                if not self._inbox and not self._stopping:
                    self._wake.wait(max(0.0, next_maintain - time.monotonic()))
            if self._stopping and not self._inbox:
                return
            try:
                self._ingest()
            except SpoolError as exc:  # the journal keeps them; tried again
                log.error("%s; rows stay in the journal", exc)
                with self._wake:
                    self._wake.wait(0.5)
            except Exception:
                log.exception("destination ingest error")
                with self._wake:
                    self._wake.wait(0.5)
            if time.monotonic() >= next_maintain:
                self._maintain()
                next_maintain = time.monotonic() + _MAINTAIN_EVERY

    def _maintain(self) -> None:
        tenants = self.spool.maintain()
        if tenants:
            self.dispatcher.notify_put(tenants)

    def _ingest(self) -> None:
        """Move journaled writes into the file, up to a chunk per transaction."""
        with self._lock:
            taken: list[_Write] = []
            n = 0
            while self._inbox and (n < _INGEST_CHUNK or not taken):
                write = self._inbox.pop(0)
                taken.append(write)
                n += len(write[0]) + len(write[1])
        if not taken:
            return
        records = [r for write in taken for r in write[0]]
        dead = [d for write in taken for d in write[1]]
        marks: dict[str, int] = {}
        for _, _, (name, offset), _ in taken:
            marks[name] = offset
        try:
            self.spool.put_many(records, list(marks.items()), dead)
        except BaseException:
            with self._lock:
                self._inbox[:0] = taken
            raise
        with self._lock:
            self._pending_bytes -= sum(write[3] for write in taken)
        for letter in dead:
            log.warning(
                "tenant %s: %s event kept as a dead letter: %s",
                shown(letter.tenant),
                kind_of(letter.kind),
                letter.reason,
            )
        if records:
            tenants = list(dict.fromkeys([m.tenant for m in records]))
            mean = sum(map(len, [m.body for m in records])) / len(records)
            self.dispatcher.notify_put(tenants, mean)

    def pending(self) -> int:
        """Rows journaled and not yet in the file."""
        with self._lock:
            return sum(len(w[0]) + len(w[1]) for w in self._inbox)

    def queued(self) -> dict[str, int]:
        """Rows waiting per tenant (in the file, leased ones included; and journaled);
        empty once closed."""
        if self._closed:
            return {}
        queued = dict(self.spool.stats().per_tenant)
        with self._lock:
            for records, _, _, _ in self._inbox:
                for record in records:
                    queued[record.tenant] = queued.get(record.tenant, 0) + 1
        return queued

    def paused(self) -> dict[str, str]:
        """Paused tenants and why (a refused or missing API key)."""
        return self.dispatcher.paused()

    def stats(self) -> Stats:
        """Counters since start: accepted, loaded (``delivered``), retried, refused (as
        ``rejected``), requests; and what is queued per tenant."""
        return self.counters.snapshot(self.queued(), self.paused())

    def idle(self) -> bool:
        """True when nothing is left to load but the rows of paused tenants."""
        if self.pending():
            return False
        paused = self.paused()
        return all(t in paused for t, n in self.spool.stats().per_tenant.items() if n)

    def flush(self, timeout: float) -> bool:
        """Send lingering rows now and wait until :meth:`idle` or ``timeout`` seconds;
        True when idle."""
        deadline = time.monotonic() + timeout
        self.dispatcher.start_flush()
        try:
            while not self.idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                with self.dispatcher.settled:
                    self.dispatcher.settled.wait(min(left, 0.05))
            return True
        finally:
            self.dispatcher.end_flush()

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to ``timeout`` seconds, stop, and leave the rest in the file for
        the next start. True when nothing was left (paused tenants' rows aside)."""
        if self._closed:
            return True
        done = self.flush(timeout) if self._thread is not None else self.idle()
        self._closed = True
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 5.0)
        self.dispatcher.stop(5.0)
        self.dispatcher.abandon()
        try:
            while self.pending():
                self._ingest()
            ingested = True
        except Exception as exc:  # the journal stays: the next start replays it
            log.error("rows stay in the journal: %s", exc)
            ingested = False
        self.spool.close(ingested=ingested)
        self.transport.close()
        return done
