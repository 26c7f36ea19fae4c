"""The journal intake: ``emit`` appends the record to this process's journal with one
``write(2)`` (the commit point: it survives ``kill -9``), and the encoder moves journal
records, as they are, into the SQLite spool file in group commits. A record becomes a
Segment message only when a sender leases it (see :meth:`JournalIntake.decode`)."""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from selligent_segment._errors import EmitterClosed, InvalidEvent, SpoolError
from selligent_segment._mapping import EncodedMessage, encode_fields
from selligent_segment._naming import EventNaming
from selligent_segment._record import PROFILE_UPDATE, journal_form, revive
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.intake._protocol import Accepted, Downstream
from selligent_segment.spool._journal import Mark, frame, unframe
from selligent_segment.spool._sqlite import DeadMessage, JournalRecord, SqliteSpool

__all__ = ["JournalIntake"]

log = logging.getLogger("selligent_segment")

#: Journal records moved into the file in one transaction.
INGEST_CHUNK = 4096
# A record this small always maps to a message under 32 KB (a message holds the record's
# fields, the email twice, up to 1.5x longer once lower-cased, and under 4 KB of more).
_CHECK_SIZE_ABOVE = 8 * 1024

#: One journal write waiting for the encoder: its frames, the (tenant, kind) of each
#: record, and the journal mark just past it.
_Write = tuple[bytes, Sequence[tuple[str, str]], Mark]


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
        written = journal_form(fields) if PROFILE_UPDATE in fields else fields  # as below
        data = frame(orjson.dumps((tenant, now, written)))
        meta = ((tenant, fields["type"]._value_),)
        with self._lock:
            if self.closed:  # close() has the journal: nothing may go in after it
                raise EmitterClosed("emit() after close(); the event was not accepted")
            self.inbox.append((data, meta, self.spool.accept_frames(data)))
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
        with self._lock:
            if self.closed:  # close() has the journal: nothing may go in after it
                raise EmitterClosed("emit_many() after close(); no event was accepted")
            self.inbox.append((data, meta, self.spool.accept_frames(data)))
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
        """Move journal records, as they are, into the file in one transaction of up to
        :data:`INGEST_CHUNK`; they are encoded when leased."""
        inbox = self.inbox
        down = self.downstream
        taken: list[_Write] = []
        records: list[JournalRecord] = []
        dead: list[DeadMessage] = []
        too_large: list[tuple[str, InvalidEvent]] = []
        marks: dict[str, int] = {}
        accepted: Counter[str] = Counter()
        nbytes = 0
        while inbox and len(records) < INGEST_CHUNK:
            write = inbox.popleft()
            taken.append(write)
            data, meta, mark = write
            marks[mark[0]] = mark[1]
            nbytes += len(data)
            for (tenant, kind), payload in zip(meta, unframe(data), strict=True):
                accepted[tenant] += 1
                if len(payload) > _CHECK_SIZE_ABOVE:  # small records always fit in 32 KB
                    try:
                        self.decode(payload)
                    except InvalidEvent as exc:
                        too_large.append((tenant, exc))
                        dead.append(
                            DeadMessage(tenant, "", kind, bytes(payload), f"too_large: {exc}")
                        )
                        continue
                records.append((tenant, kind, payload))
        n = sum(accepted.values())
        dispatcher = down.senders()
        try:
            down.backpressure.wait_for_spool_room(self.spool, nbytes, stopping, dispatcher.settled)
            self._ingest(records, list(marks.items()), dead, stopping, dispatcher)
        except BaseException:
            # Not in the file: back to the head of the inbox, in order, so that a later
            # step (or close, which keeps the journal when it cannot) still has them.
            inbox.extendleft(reversed(taken))
            raise
        # Counted and reported only once they are in the file: a failed step repeats.
        down.counters.add_many("accepted", accepted)
        for tenant, refusal in too_large:
            down.too_large(tenant, refusal)
        self.ingested += n
        down.backpressure.notify()
        if records:
            tenants = list({r[0]: None for r in records})
            # A message is about twice its record: the email goes in twice, plus context.
            dispatcher.notify_put(tenants, 2 * nbytes / n)

    def _ingest(
        self,
        records: list[JournalRecord],
        marks: list[Mark],
        dead: list[DeadMessage],
        stopping: Callable[[], bool],
        dispatcher: Dispatcher,
    ) -> None:
        """Move journaled records into the file; on a database error (disk full...) keep
        trying: meanwhile ``emit`` fills ``max_pending`` and then ``on_full`` applies."""
        while True:
            pressure = self.downstream.backpressure
            try:
                self.spool.put_many((), marks, dead, records)
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
        queued = {} if self.closed else dict(self.spool.stats().per_tenant)
        for _, meta, _ in list(self.inbox):
            for tenant, _ in meta:
                queued[tenant] = queued.get(tenant, 0) + 1
        return queued

    def mark_paused(self, tenant: str, reason: str | None) -> None:
        if not self.closed:
            self.spool.mark_paused(tenant, reason)

    def close(self, dispatcher: Dispatcher) -> bool:
        """Move accepted records still in memory (journaled already) into the file so the
        journal can go; a request still out stays leased in the file, and the next start
        sends it again. If the move fails, the journal stays for the next start."""
        dispatcher.abandon()
        self.downstream.backpressure.report_refused(final=True)
        ingested = True
        try:
            while self.inbox:
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
