"""The journal intake: ``emit`` appends the record to this process's journal with one
``write(2)`` (the commit point: it survives ``kill -9``), and the encoder moves what was
accepted into the SQLite spool file in group commits. While this process's senders keep
up, it maps the records (still in memory) into their messages, and the spool keeps the
first of them in memory for those senders too (``SqliteSpool.put_many(keep=True)``);
when a backlog builds up, records go into the file as they are and become messages when
leased (see :meth:`JournalIntake.decode`), as do journal records replayed after a crash."""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import orjson

from selligent_segment._errors import EmitterClosed, InvalidEvent, SpoolError, shown
from selligent_segment._mapping import (
    BODY_OF,
    TENANT_OF,
    EncodedMessage,
    TooLarge,
    encode_fields,
)
from selligent_segment._naming import EventNaming
from selligent_segment._record import PROFILE_UPDATE, journal_form, revive
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.intake._protocol import Accepted, Downstream
from selligent_segment.spool._journal import Mark, frame, unframe
from selligent_segment.spool._protocol import SpoolStats
from selligent_segment.spool._sqlite import DeadMessage, JournalRecord, SqliteSpool

#: The tenant of a record's (tenant, kind).
TENANT_OF_META = operator.itemgetter(0)

__all__ = ["JournalIntake"]

log = logging.getLogger("selligent_segment")

#: Journal records moved into the file in one transaction.
INGEST_CHUNK = 4096

# A record this small always maps to a message under 32 KB (a message holds the record's
# fields, the email twice, up to 1.5x longer once lower-cased, and under 4 KB of more).
_CHECK_SIZE_ABOVE = 8 * 1024

#: Accepted records whose fields the inbox holds beyond their journal frames (so that the
#: encoder maps them without reading the frames back): about a chunk's worth. A burst
#: beyond it waits as frames only (a few hundred bytes each), which the encoder decodes.
FIELDS_HELD = INGEST_CHUNK


class _Write(NamedTuple):
    """One journal write waiting for the encoder."""

    data: bytes  # its frames
    meta: Sequence[tuple[str, str]]  # the tenant and kind of each record
    mark: Mark  # the journal mark just past it
    accepted: Sequence[Accepted] | None  # the records as accepted, when held
    identifies: bool  # whether a record of it carries a profile update


@attrs.define
class _Chunk:
    """What one step moves into the file: messages, journal records, dead letters (and
    why each was refused: over 32 KB, or not), how many bytes, and about how large their
    messages are."""

    messages: list[EncodedMessage] = attrs.Factory(list)
    records: list[JournalRecord] = attrs.Factory(list)
    dead: list[DeadMessage] = attrs.Factory(list)
    refused: list[tuple[str, InvalidEvent, bool]] = attrs.Factory(list)  # too large?
    nbytes: int = 0  # what goes into the file
    message_size: float = 0.0  # a message's size, on average (about)

    def refuse(self, tenant: str, kind: str, payload: bytes, error: InvalidEvent) -> None:
        """Keep the record ``payload`` as a dead letter: it cannot become its message."""
        too_large = isinstance(error, TooLarge)
        reason = f"too_large: {error}" if too_large else str(error)
        self.dead.append(DeadMessage(tenant, "", kind, payload, reason))
        self.refused.append((tenant, error, too_large))


def _identifies(taken: Sequence[_Write]) -> bool:
    """True when a record of ``taken`` carries a profile update (becomes an identify)."""
    return any(write.identifies for write in taken)


class JournalIntake:
    """Records journaled on disk at ``accept``, then moved into a :class:`SqliteSpool`.

    Guarantee: when ``accept``/``accept_many`` return, the records are in the kernel
    (on disk with ``fsync``): a process killed at any instant after loses none of them;
    the next process to use the file replays the journal.
    """

    durable = True

    def __init__(
        self,
        *,
        path: Path,
        max_spool_bytes: int,
        fsync: bool,
        naming: EventNaming,
        downstream: Downstream,
    ) -> None:
        self.naming = naming
        self.downstream = downstream
        self.spool = SqliteSpool(
            path,
            max_bytes=max_spool_bytes,
            decoder=self.decode,
            fsync=fsync,
            on_buried=downstream.buried,  # counted and reported through on_failure
            defer_acks=self.has_work,  # the encoder's next step writes them
        )
        self.inbox: deque[_Write] = deque()
        # Records journaled (under _lock) and moved into the file (by the encoder).
        self.journaled = 0
        self.ingested = 0
        self._lock = threading.Lock()  # journal order = inbox order
        self.closed = False

    def pending(self) -> int:
        return self.journaled - self.ingested

    def has_work(self) -> bool:
        return bool(self.inbox)

    def accept(self, fields: dict[str, Any], tenant: str, now: float | None) -> bool:
        identifies = PROFILE_UPDATE in fields
        written = journal_form(fields) if identifies else fields  # as below
        data = frame(orjson.dumps((tenant, now, written)))
        meta = ((tenant, fields["type"]._value_),)
        held = ((fields, tenant, now),) if self.journaled - self.ingested < FIELDS_HELD else None
        with self._lock:
            if self.closed:  # close() has the journal: nothing may go in after it
                raise EmitterClosed("emit() after close(); the event was not accepted")
            mark = self.spool.accept_frames(data)
            self.inbox.append(_Write(data, meta, mark, held, identifies))
            self.journaled += 1
        return True

    def accept_many(self, records: Sequence[Accepted]) -> bool:
        # Framed one by one: orjson's results keep a 4 KiB buffer each until freed.
        # An identify's fields in their journal form: the previous release refuses them.
        data = b"".join(
            [
                frame(orjson.dumps((t, n, journal_form(f) if PROFILE_UPDATE in f else f)))
                for f, t, n in records
            ]
        )
        meta = [(t, f["type"]._value_) for f, t, _ in records]
        identifies = any(PROFILE_UPDATE in f for f, _, _ in records)
        held = records if self.journaled - self.ingested < FIELDS_HELD else None
        with self._lock:
            if self.closed:  # close() has the journal: nothing may go in after it
                raise EmitterClosed("emit_many() after close(); no event was accepted")
            mark = self.spool.accept_frames(data)
            self.inbox.append(_Write(data, meta, mark, held, identifies))
            self.journaled += len(meta)
        return True

    def decode(self, payload: bytes | memoryview) -> EncodedMessage:
        """A journal record (tenant, emit time, fields) as its message; InvalidEvent when
        it is unreadable or its message is over 32 KB."""
        try:
            tenant, now, raw = orjson.loads(payload)
            return encode_fields(revive(raw), tenant, self.naming, now)
        except InvalidEvent:
            raise
        except Exception:  # a damaged record: whatever it breaks, it is not a message
            raise InvalidEvent("record", "unreadable journal record") from None

    def step(self, stopping: Callable[[], bool]) -> None:
        """Move up to :data:`INGEST_CHUNK` accepted records into the file in one
        transaction. While the senders keep up (the spool keeps what it is given for them,
        ``SqliteSpool.keeping``), as their messages (a record that cannot become its
        message goes in as a dead letter, reported); otherwise, and in a chunk that holds
        a profile update, as the journal records they are, encoded when leased (see
        ``_as_records``): a backlog (an outage) costs no encoding until it is sent, and
        half the room in the file."""
        inbox = self.inbox
        down = self.downstream
        taken: list[_Write] = []
        marks: dict[str, int] = {}
        accepted: Counter[str] = Counter()
        n = 0
        while inbox and n < INGEST_CHUNK:
            write = inbox.popleft()
            taken.append(write)
            name, offset = write.mark
            marks[name] = offset
            n += len(write.meta)
            accepted.update(map(TENANT_OF_META, write.meta))
        if self.spool.keeping() and not _identifies(taken):
            chunk = self._as_messages(taken, self.spool.unkept())
        else:  # a backlog builds up (an outage, say): encoded once leased, not now
            chunk = self._as_records(taken)
        dispatcher = down.senders()
        try:
            down.backpressure.wait_for_spool_room(
                self.spool, chunk.nbytes, stopping, dispatcher.settled
            )
            self._ingest(chunk, list(marks.items()), stopping, dispatcher)
        except BaseException:
            # Not in the file: back to the head of the inbox, in order, so that a later
            # step (or close, which keeps the journal when it cannot) still has them.
            inbox.extendleft(reversed(taken))
            raise
        # Counted and reported only once they are in the file: a failed step repeats.
        down.counters.add_many("accepted", accepted)
        for tenant, error, too_large in chunk.refused:
            if too_large:
                down.too_large(tenant, error)
            else:
                log.error(
                    "tenant %s: event kept as a dead letter: %s",
                    shown(tenant),
                    error,
                    extra={"tenant": tenant, "reason": "unreadable_record"},
                )
                down.buried(tenant, error)
        self.ingested += n
        down.backpressure.notify()
        tenants = [*map(TENANT_OF, chunk.messages), *(r[0] for r in chunk.records)]
        if tenants:
            dispatcher.notify_put(list(dict.fromkeys(tenants)), chunk.message_size)

    def _as_messages(self, taken: list[_Write], unkept: frozenset[str]) -> _Chunk:
        """The records of ``taken`` as their messages (mapped from the fields held, or
        read back from the frames), or dead letters (with the reason) when they cannot
        be: over 32 KB, a damaged frame, or a value no check foresaw. Those of the
        ``unkept`` tenants (paused, or retried: their backlog builds up) as the journal
        records they are (see :meth:`_as_records`): a tenant's all go one way, in order."""
        naming = self.naming
        chunk = _Chunk()
        messages = chunk.messages
        for write in taken:
            # Frames only (read back), or a write with an unkept tenant's records.
            if write.accepted is None or (unkept and any(t in unkept for t, _ in write.meta)):
                for (tenant, kind), payload in zip(write.meta, unframe(write.data), strict=True):
                    if tenant in unkept:
                        self._add_record(chunk, tenant, kind, payload)
                        continue
                    try:
                        messages.append(self.decode(payload))
                    except InvalidEvent as exc:
                        chunk.refuse(tenant, kind, bytes(payload), exc)
                continue
            for index, (fields, tenant, now) in enumerate(write.accepted):
                try:
                    messages.append(encode_fields(fields, tenant, naming, now))
                except Exception:
                    # What the plain path makes of the record, error text included: its
                    # frame decoded, as at lease or after a restart.
                    record = bytes(list(unframe(write.data))[index])
                    try:
                        messages.append(self.decode(record))
                    except InvalidEvent as exc:
                        chunk.refuse(tenant, write.meta[index][1], record, exc)
        message_bytes = sum(map(len, map(BODY_OF, messages)))
        record_bytes = sum(len(body) for _, _, body in chunk.records)
        chunk.nbytes = message_bytes + record_bytes
        # A message is about twice its record: the email goes in twice, plus context.
        n = len(messages) + len(chunk.records)
        chunk.message_size = (message_bytes + 2 * record_bytes) / n if n else 0.0
        return chunk

    def _as_records(self, taken: list[_Write]) -> _Chunk:
        """The records of ``taken`` as the journal records they are, encoded when leased:
        a process of the previous release sharing the file refuses the identify of a
        profile update then (a dead letter there), where it would send a message as it
        is. Records over 8 KB are checked now: over 32 KB as a message, a dead letter."""
        chunk = _Chunk()
        records = chunk.records
        nbytes = 0
        for data, meta, _, _, _ in taken:
            nbytes += len(data)
            for (tenant, kind), payload in zip(meta, unframe(data), strict=True):
                self._add_record(chunk, tenant, kind, payload)
        chunk.nbytes = nbytes
        # A message is about twice its record: the email goes in twice, plus context.
        chunk.message_size = 2 * nbytes / len(records) if records else 0.0
        return chunk

    def _add_record(
        self, chunk: _Chunk, tenant: str, kind: str, payload: bytes | memoryview
    ) -> None:
        """The journal record ``payload`` into ``chunk`` as it is, but one over 8 KB whose
        message would be over 32 KB: a dead letter, reported ``too_large`` (as before)."""
        if len(payload) > _CHECK_SIZE_ABOVE:  # small records always fit in 32 KB
            try:
                self.decode(payload)
            except InvalidEvent as exc:
                chunk.refused.append((tenant, exc, True))
                chunk.dead.append(
                    DeadMessage(tenant, "", kind, bytes(payload), f"too_large: {exc}")
                )
                return
        chunk.records.append((tenant, kind, payload))

    def _ingest(
        self,
        chunk: _Chunk,
        marks: list[Mark],
        stopping: Callable[[], bool],
        dispatcher: Dispatcher,
    ) -> None:
        """Move the messages of journaled records into the file; on a database error (disk
        full...) keep trying: meanwhile ``emit`` fills ``max_pending`` and then ``on_full``
        applies."""
        while True:
            pressure = self.downstream.backpressure
            pressure.writing_since = time.monotonic()  # a write that waits long fails too
            try:
                try:
                    self.spool.put_many(chunk.messages, marks, chunk.dead, chunk.records, keep=True)
                finally:
                    pressure.writing_since = None
                pressure.ingest_failing = False
                return
            except SpoolError as exc:
                if stopping():
                    raise  # close(): the journal stays, the next start replays it
                pressure.ingest_failing = True  # emit_many stops waiting: on_full applies
                pressure.notify()
                pressure.log_rarely(
                    "cannot write the spool file (%s); retrying",
                    exc,
                    kind="ingest",
                    reason="spool_unwritable",
                )
                with dispatcher.settled:
                    dispatcher.settled.wait(0.5)

    def maintain(self) -> list[str]:
        self.downstream.backpressure.report_refused()
        try:
            return self.spool.maintain()
        except Exception:  # the next round tries again
            log.exception("spool upkeep failed", extra={"reason": "spool_upkeep"})
            return []

    def queued(self) -> dict[str, int]:
        return self._queued(None if self.closed else self.spool.stats())

    def queued_now(self) -> dict[str, int] | None:
        if self.closed:
            return self._queued(None)
        stats = self.spool.stats_now()
        return None if stats is None else self._queued(stats)

    def _queued(self, stats: SpoolStats | None) -> dict[str, int]:
        queued = {} if stats is None else dict(stats.per_tenant)
        for write in list(self.inbox):
            for tenant, _ in write.meta:
                queued[tenant] = queued.get(tenant, 0) + 1
        return queued

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        if not self.closed:
            self.spool.mark_paused(tenant, reason)

    def close(self, dispatcher: Dispatcher, *, encoder_busy: bool = False) -> bool:
        """Move accepted records still in memory (journaled already) into the file so the
        journal can go; a request still out stays leased in the file, and the next start
        sends it again. If the move fails, or the encoder is still in a step (its records
        are in neither the inbox nor the file), the journal stays for the next start."""
        dispatcher.abandon()
        self.downstream.backpressure.report_refused(final=True)
        ingested = not encoder_busy
        try:
            if encoder_busy:
                log.warning(
                    "the encoder is still busy: accepted events stay in the journal for the "
                    "next start",
                    extra={"reason": "left_in_spool"},
                )
            while self.inbox and not encoder_busy:
                self.step(lambda: True)
            left = self.spool.stats().messages
        except SpoolError as exc:
            log.error(
                "%s; accepted events stay in the journal", exc, extra={"reason": "spool_error"}
            )
            ingested, left = False, -1
        except Exception:
            log.exception(
                "could not move accepted events into the spool", extra={"reason": "spool_error"}
            )
            ingested, left = False, -1
        if left:
            log.warning(
                "%s events stay in the spool %s for the next start",
                "some" if left < 0 else left,
                self.spool.path,
                extra={"reason": "left_in_spool", "count": max(left, 0)},
            )
        with self._lock:  # no emit() journals after the last look at the inbox: a record
            self.closed = True  # written then would be deleted with the journal
            empty = not self.inbox
        self.spool.close(ingested=ingested and empty)  # outside the lock: SQL may wait
        return False  # what is left stays in the file: nothing is given up

    def late(self) -> None:
        """Nothing to do: a record journaled while close() ran stays in the journal (kept
        for the next start when it was not moved in), and none is accepted after it."""

    def abandon(self) -> None:
        """In a forked child: the parent keeps its journal, its lock and its records."""
        self.spool.abandon()
