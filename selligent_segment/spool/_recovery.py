"""Recovery of dead owners: a live process takes over what a stopped one left behind.

:func:`~selligent_segment.spool._journal.claim_dead_owners` finds the owners nobody holds
the lock of (and sweeps the temporary files of processes killed while making one);
:class:`Recovery` replays their journals into the SQLite file from the offsets it records,
frees their leases, and forgets the offsets of journals gone with their owner.

Guarantee: every record a dead owner journaled ends in the file, as a row to send or as a
dead letter (an unreadable record; damaged journal bytes, kept whole and logged once
kept), and its offset goes in with it in one transaction: a replay cut short resumes
where it stopped, no record twice in the file. A journal goes only once replayed to its
end; a file in the journal directory that is not a journal is left untouched and
reported. Leases of a dead owner are freed, so their messages are sent again (same
messageId).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import orjson

from selligent_segment._errors import SpoolError
from selligent_segment._mapping import EncodedMessage
from selligent_segment.spool._journal import (
    Damaged,
    Mark,
    claim_dead_owners,
    journals_of,
    read_frames,
)
from selligent_segment.spool._schema import transaction
from selligent_segment.spool._statements import DeadMessage, JournalRecord

__all__ = ["Ingest", "Recovery", "Report"]

log = logging.getLogger("selligent_segment")

_REPLAY_CHUNK = 5_000

#: How replayed records go into the file, in one transaction with their journal's offset:
#: ``SqliteSpool.put_many(messages, marks, dead, records)``.
Ingest = Callable[
    [Sequence[EncodedMessage], Sequence[Mark], Sequence[DeadMessage], Sequence[JournalRecord]],
    None,
]
#: How an error of upkeep is logged (at ERROR, rarely, without a traceback).
Report = Callable[[SpoolError], None]


def _damaged_letter(journal: Path, damaged: Damaged) -> DeadMessage:
    """The dead letter that reports (and keeps) bytes of a journal replay had to skip."""
    reason = f"unreadable: damaged journal bytes at {damaged.start}..{damaged.end} in {journal}"
    return DeadMessage("", "", "", damaged.data, reason)


def _records_of(payloads: Sequence[bytes]) -> tuple[list[JournalRecord], list[DeadMessage]]:
    """Replayed journal payloads as rows to insert; the unreadable ones as dead letters."""
    records: list[JournalRecord] = []
    dead: list[DeadMessage] = []
    for payload in payloads:
        try:
            tenant, _, fields = orjson.loads(payload)
            kind = fields["type"]
            if not isinstance(tenant, str) or not isinstance(kind, str):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            dead.append(DeadMessage("", "", "", payload, "unreadable journal record"))
            continue
        records.append((tenant, kind, payload))
    return records, dead


@attrs.frozen
class Recovery:
    """Recovery of the dead owners of the journals in ``directory``, on behalf of the live
    owner ``owner``, into the file open as ``db`` (used under ``lock``)."""

    db: sqlite3.Connection
    lock: threading.Lock
    directory: Path
    owner: str

    def recover(self, ingest: Ingest, report: Report) -> bool:
        """Replay the journals of dead owners and free their leases (also those of owners
        gone without their lock file); True when there was any to recover."""
        recovered = False
        with claim_dead_owners(self.directory, skip=self.owner) as dead:
            for owner in dead:
                self._replay_owner(owner, ingest, report)
                recovered = True
        with self.lock:
            owners = [
                row[0]
                for row in self.db.execute(
                    "SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL"
                )
            ]
        for owner in owners:
            if owner != self.owner and not (self.directory / f"{owner}.owner").exists():
                self.free_leases(owner)  # owner gone without its lock file
                recovered = True
        self._forget_gone_journals()
        return recovered

    def free_leases(self, owner: str) -> int:
        """Free the rows ``owner`` leased, for any process to lease again; how many."""
        with self.lock, transaction(self.db) as db:
            freed = db.execute("UPDATE messages SET owner = NULL WHERE owner = ?", (owner,))
            return freed.rowcount

    def _forget_gone_journals(self) -> None:
        """Drop the offsets of journals that are gone with their owner: a process killed
        in ``close`` between deleting its files and their offsets leaves them behind. (An
        owner's lock file comes before its first journal, its offsets after.)"""
        with self.lock:
            names = [row[0] for row in self.db.execute("SELECT name FROM journals")]
        gone = [
            (name,)
            for name in names
            if not name.startswith(self.owner + ".")
            and not (self.directory / f"{name.split('.', 1)[0]}.owner").exists()
            and not (self.directory / name).exists()
        ]
        if gone:
            with self.lock, transaction(self.db) as db:
                db.executemany("DELETE FROM journals WHERE name = ?", gone)

    def _replay_owner(self, owner: str, ingest: Ingest, report: Report) -> None:
        replayed = read = 0
        for name in journals_of(self.directory, owner):
            with self.lock:
                row = self.db.execute(
                    "SELECT offset FROM journals WHERE name = ?", (name,)
                ).fetchone()
            offset = row[0] if row else 0
            try:
                frames = list(read_frames(self.directory / name, offset))
            except FileNotFoundError:
                continue
            except SpoolError as exc:  # not a journal: left untouched, reported
                report(exc)
                continue
            read += 1
            for start in range(0, len(frames), _REPLAY_CHUNK):
                chunk = frames[start : start + _REPLAY_CHUNK]
                payloads = [p for _, p in chunk if not isinstance(p, Damaged)]
                records, dead = _records_of(payloads)
                damaged = [p for _, p in chunk if isinstance(p, Damaged)]
                dead += [_damaged_letter(self.directory / name, d) for d in damaged]
                ingest((), [(name, chunk[-1][0])], dead, records)
                replayed += len(payloads)
                for d in damaged:  # logged once kept (a crash before replays them again)
                    log.error(
                        "damaged journal bytes at %d..%d in %s skipped: "
                        "the events in those %d bytes cannot be sent; the bytes are kept as a "
                        "dead letter (selligent-segment dead-letters list --reason unreadable)",
                        d.start,
                        d.end,
                        self.directory / name,
                        d.end - d.start,
                        extra={"reason": "unreadable"},
                    )
            # The file, then its offset: a kill between leaves an offset at its end.
            (self.directory / name).unlink(missing_ok=True)
            with self.lock, transaction(self.db) as db:
                db.execute("DELETE FROM journals WHERE name = ?", (name,))
        freed = self.free_leases(owner)
        with self.lock, transaction(self.db) as db:
            db.execute("DELETE FROM journals WHERE name LIKE ?", (owner + ".%",))
        if not (read or freed):  # only files that are not journals (reported above)
            return
        log.warning(
            "recovered after a stopped process (%s): %d events replayed "
            "from its journal, %d leased events to send again",
            owner,
            replayed,
            freed,
            extra={"reason": "recovered", "count": replayed + freed},
        )
