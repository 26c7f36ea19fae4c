"""What the counts of a run say: the lines and tables of the commands' summaries and their
exit statuses, as pure functions (no printing, no clock, no files), so that each can be
tested on values; the commands print what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs

from selligent_segment._errors import shown
from selligent_segment.cli._base import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNDELIVERED,
    PROG,
)
from selligent_segment.delivery._stats import LastError, Stats, TenantStats
from selligent_segment.spool._file import DeadLetter, SpoolStatus

__all__ = [
    "RESUME_HINT",
    "SendRun",
    "TenantRun",
    "age",
    "dead_letter_rows",
    "delivery_summary",
    "demo_table",
    "earlier_summary",
    "error_note",
    "flush_exit_status",
    "flush_json",
    "flush_summary",
    "only_paused_left",
    "queued_tenants",
    "reading_summary",
    "rejects_summary",
    "retry_summary",
    "send_exit_status",
    "send_run",
    "spool_status_table",
    "tenant_table",
    "undelivered_tenants",
    "when",
    "why",
]

#: What ``send`` says after an interruption.
RESUME_HINT = (
    f"{PROG}: re-run the same command to resume: events already delivered "
    "keep their messageId and are dropped by Segment as duplicates"
)


# -- send ---------------------------------------------------------------------------------


def send_exit_status(stopped: int | None, undelivered: int, invalid: int) -> int:
    """The exit status of ``send``: ``stopped`` (the status of a run that stopped early:
    usage 2, interrupted 130) first, then 3 when events were not delivered, then 1 when
    records were invalid, else 0. A dry run delivers nothing: ``undelivered`` is 0."""
    if stopped is not None:
        return stopped
    if undelivered:
        return EXIT_UNDELIVERED
    return EXIT_INVALID if invalid else EXIT_OK


def reading_summary(read: int, invalid: int, inputs: int) -> str:
    """``selligent-segment: read N records from K inputs: V valid, I invalid``."""
    return (
        f"{PROG}: read {read:,} records from {inputs} input{'s' if inputs != 1 else ''}"
        f": {read - invalid:,} valid, {invalid:,} invalid"
    )


def rejects_summary(count: int, path: str, reasons_path: str) -> str:
    """Where ``--rejects`` put the ``count`` invalid records and their reasons."""
    return f"{PROG}: {count:,} invalid records written to {path}, their reasons to {reasons_path}"


@attrs.frozen
class TenantRun:
    """What one run of ``send`` did for one tenant, apart from what it also delivered of
    events earlier runs left in the spool file.

    ``accepted``, ``delivered`` and ``not_delivered`` count this run's events only
    (``not_delivered`` includes ``not_accepted``, the events the spool had no room for).
    ``earlier_delivered`` and ``earlier_left`` count events found in the spool: delivered
    by this run, and still not delivered (queued, or failed) at its end. ``queued`` is
    what the tenant has queued after the run, whichever run accepted it.
    """

    tenant: str
    accepted: int = 0
    delivered: int = 0
    not_delivered: int = 0
    not_accepted: int = 0
    earlier_delivered: int = 0
    earlier_left: int = 0
    queued: int = 0
    detail: TenantStats = attrs.field(factory=TenantStats, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see docs/operations.md, ``send --json``)."""
        error = self.detail.last_error
        return {
            "accepted": self.accepted,
            "delivered": self.delivered,
            "not_delivered": self.not_delivered,
            "not_accepted": self.not_accepted,
            "earlier_delivered": self.earlier_delivered,
            "earlier_left": self.earlier_left,
            "queued": self.queued,
            "rejected": dict(self.detail.rejected),
            "dropped": dict(self.detail.dropped),
            "paused": self.detail.paused,
            "last_error": None if error is None else error.to_dict(),
        }


@attrs.frozen
class SendRun:
    """The counts of one run of ``send``, per tenant (in name order) and in total."""

    tenants: tuple[TenantRun, ...]

    def total(self, field: str) -> int:
        """The sum of one of :class:`TenantRun`'s counts over the tenants."""
        return sum(int(getattr(t, field)) for t in self.tenants)

    @property
    def not_delivered(self) -> int:
        """This run's events not delivered (the exit status depends on these only)."""
        return self.total("not_delivered")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: totals, then ``tenants`` by name."""
        fields = ("accepted", "delivered", "not_delivered", "not_accepted")
        return {
            **{f: self.total(f) for f in fields},
            "earlier": {
                "delivered": self.total("earlier_delivered"),
                "left": self.total("earlier_left"),
            },
            "tenants": {t.tenant: t.to_dict() for t in self.tenants},
        }


def send_run(
    stats: Stats,
    not_accepted: Mapping[str, int],
    left: Mapping[str, int] | None = None,
    recent: Mapping[str, tuple[int, int, int]] | None = None,
    emitted: Mapping[str, int] | None = None,
) -> SendRun:
    """What this run did, told apart from what earlier runs left in the spool file.

    ``emitted`` is what ``emit`` took per tenant: with a spool file, ``stats`` count an
    event accepted once it is in the file, and one still in this process's journal (the
    file locked by another process, say) is this run's, not delivered.

    ``stats`` are the emitter's (its ``accepted`` counts this run's events only; its
    ``delivered`` and failures count whatever it sent); ``left`` is what each tenant has
    queued in the spool file after the run (None: take ``stats``' queue lengths). Per
    tenant, the events in play are delivered + failed + left; those beyond this run's
    accepted ones came from earlier runs. A tenant's queue is first in, first out, so
    those earlier events are counted as the first delivered. Where an earlier event
    failed instead, this over-counts this run's undelivered ones: never the other way
    round, so the exit status never claims a delivery that did not happen.

    A spool file shared with live processes breaks that count: what is left includes
    their events (leased, or new), and this run's may be delivered by them. ``recent``
    (``SpoolFile.since(t)``, ``t`` noted before the run emitted anything) says per tenant
    what is still in the file of the events put there since (queued, dead letters),
    and the dead letters older events became meanwhile. Each of this run's events not
    delivered is among those recent ones, so their number bounds this run's undelivered
    events too (the smaller bound is taken): exact unless another process accepted
    events of the same tenant during the run and they are still in the file, where
    nothing tells its events from this run's and they count as this run's. Events of
    earlier runs still left are then those older than ``t`` still queued or failed.
    """
    emitted = emitted or {}
    names = set(stats.tenants) | set(not_accepted) | {t for t, n in emitted.items() if n}
    if left is not None:
        names |= {t for t, n in left.items() if n}
    rows = []
    for tenant in sorted(names):
        d = stats.tenants.get(tenant, TenantStats())
        unfiled = max(0, emitted.get(tenant, 0) - d.accepted)  # in the journal: not sent
        # The file's queue (stats' counts the journal's too: those are ``unfiled``).
        queued = max(0, d.queued - unfiled) if left is None else left.get(tenant, 0)
        failed = sum(d.rejected.values()) + sum(d.dropped.values())
        earlier = max(0, d.delivered + failed + queued - d.accepted)
        earlier_delivered = min(d.delivered, earlier)
        delivered = d.delivered - earlier_delivered
        earlier_left = earlier - earlier_delivered
        if recent is not None:
            new_queued, new_dead, old_dead = recent.get(tenant, (0, 0, 0))
            delivered = d.accepted - min(d.accepted - delivered, new_queued + new_dead)
            earlier_delivered = max(0, d.delivered - delivered)
            earlier_left = max(0, queued - new_queued) + old_dead
        refused = not_accepted.get(tenant, 0)
        rows.append(
            TenantRun(
                tenant,
                accepted=d.accepted + unfiled,
                delivered=delivered,
                not_delivered=d.accepted - delivered + refused + unfiled,
                not_accepted=refused,
                earlier_delivered=earlier_delivered,
                earlier_left=earlier_left,
                queued=queued,
                detail=d,
            )
        )
    return SendRun(tuple(rows))


def delivery_summary(run: SendRun) -> list[str]:
    """The line of this run's totals, then the table per tenant of this run (when it had
    a tenant), then what it delivered of earlier runs' events (when any)."""
    accepted = run.total("accepted")
    lines = [
        f"{PROG}: {accepted:,} events accepted, {run.total('delivered'):,} delivered, "
        f"{run.not_delivered:,} not delivered"
    ]
    ours = [t for t in run.tenants if t.accepted or t.not_accepted]
    if ours:
        lines.extend(tenant_table(ours))
    lines.extend(earlier_summary(run))
    return lines


def earlier_summary(run: SendRun) -> list[str]:
    """What the run delivered of events earlier runs left in the spool file, and how
    many of those are still not delivered (not counted in the exit status)."""
    delivered, left = run.total("earlier_delivered"), run.total("earlier_left")
    if not (delivered or left):
        return []
    line = f"{PROG}: also delivered {delivered:,} events earlier runs left in the spool"
    if left:
        line += (
            f"; {left:,} of those are still not delivered (not counted in the exit status; "
            f"see: {PROG} spool status)"
        )
    return [line]


def tenant_table(tenants: Sequence[TenantRun]) -> list[str]:
    """A header and one row a tenant: accepted, delivered, not delivered (this run's); the
    tenants left aligned, the numbers right aligned, every line indented by two spaces."""
    rows = [("tenant", "accepted", "delivered", "not delivered")]
    for t in tenants:
        rows.append((t.tenant, f"{t.accepted:,}", f"{t.delivered:,}", f"{t.not_delivered:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    return lines


def undelivered_tenants(run: SendRun, failed: Collection[str] = ()) -> list[str]:
    """One line a tenant with events not delivered (this run's, or earlier ones still
    left), in name order, saying why; the tenant is shown escaped, its key never.
    ``failed`` adds tenants the emitter reported a failure or a pause for."""
    lines = []
    for t in run.tenants:
        if t.not_delivered or t.earlier_left or t.tenant in failed:
            lines.append(f"{PROG}: tenant {shown(t.tenant)}: {why(t)}")
    return lines


def why(t: TenantRun) -> str:
    """Why a tenant's events were not delivered: how many of this run's, each rejection
    and drop reason with its count, the pause, the events the spool had no room for,
    those left by earlier runs, what stays queued, and the last error."""
    d = t.detail
    parts = []
    if t.not_delivered:
        parts.append(f"{t.not_delivered:,} not delivered")
    parts += [f"{n:,} {reason}" for reason, n in {**d.rejected, **d.dropped}.items()]
    if d.paused:
        parts.append(f"paused: {d.paused}")
    if t.not_accepted:
        parts.append(f"{t.not_accepted:,} not accepted (spool full)")
    if t.earlier_left:
        parts.append(f"{t.earlier_left:,} left by earlier runs")
    if t.queued:
        parts.append(f"{t.queued:,} stay queued in the spool")
    if d.last_error is not None:
        parts.append(f"last error: {error_note(d.last_error)}")
    return "; ".join(parts) or "not delivered"


def error_note(error: LastError, now: float | None = None) -> str:
    """``connection refused (HTTP 503)``; with ``now`` (Unix time), ``, 42s ago`` after
    it. The text is escaped: it may echo what a server said."""
    text = shown(error.text, quote=False, limit=len(error.text) + 1)
    status = "" if error.status is None or str(error.status) in text else f" (HTTP {error.status})"
    ago = "" if now is None else f", {age(max(0.0, now - error.at))} ago"
    return f"{text}{status}{ago}"


def retry_summary(stats: Stats) -> str:
    """The requests sent and the retries, labelled as what they count: every retry of a
    batch counts each of its events again, so re-sends can outnumber the events."""
    return (
        f"{stats.requests:,} requests; {stats.retried_events:,} events retried "
        f"({stats.retried:,} re-sends: each retry of a batch counts all its events)"
    )


def queued_tenants(stats: Stats) -> set[str]:
    """The tenants with events still queued."""
    return {t for t, s in stats.tenants.items() if s.queued}


def only_paused_left(stats: Stats) -> bool:
    """True when events are queued and every tenant holding them is paused (a refused or
    missing key): waiting longer will not deliver them."""
    queued = queued_tenants(stats)
    return bool(queued) and all(stats.tenants[t].paused for t in queued)


# -- flush --------------------------------------------------------------------------------


def flush_summary(delivered: int, status: SpoolStatus, now: float | None = None) -> list[str]:
    """What ``flush`` delivered, what is left per tenant (and why: the pause, the last
    delivery error), the dead letters kept."""
    lines = [f"delivered {delivered} events; {status.queued} left in {status.path}"]
    for t in status.tenants:
        if t.queued:
            paused = f" ({t.paused})" if t.paused else ""
            error = ""
            if t.last_error is not None and t.last_error.text != t.paused:  # not said twice
                error = f"; last error: {error_note(t.last_error, now)}"
            lines.append(
                f"  tenant {shown(t.tenant)}: {t.queued} events not delivered{paused}{error}"
            )
    if _unreplayed(status):
        lines.append(
            f"{status.journal_bytes} bytes of journals are not in the file yet: the next "
            "start (or flush) replays them"
        )
    if status.dead_letters:
        lines.append(
            f"{status.dead_letters} dead letters kept; see: {PROG} dead-letters "
            f"list --spool {status.path}"
        )
    return lines


def _unreplayed(status: SpoolStatus) -> bool:
    """True when the spool has journals no live process holds: events accepted that are
    not in the file yet (the file was locked, say). A live process's are its own."""
    return bool(status.journal_bytes) and not status.processes


def flush_json(delivered: int, status: SpoolStatus, exit_status: int) -> dict[str, Any]:
    """``flush --json``: what it delivered, then the spool's status as ``spool status
    --json`` shows it, and the exit status (see docs/operations.md)."""
    return {"delivered": delivered, "spool": status.to_dict(), "exit_status": exit_status}


def flush_exit_status(status: SpoolStatus) -> int:
    """3 while the spool holds deliverable events (queued in the file, or in journals no
    live process holds), else 0. Dead letters are kept and listed, but not deliverable:
    only what is queued counts."""
    waiting = any(t.queued for t in status.tenants) or _unreplayed(status)
    return EXIT_UNDELIVERED if waiting else EXIT_OK


# -- spool status -------------------------------------------------------------------------


def spool_status_table(status: SpoolStatus, now: float | None = None) -> list[str]:
    """The spool file, its sizes, then a row a tenant: queued, leased, dead letters, the
    age of the oldest event and the state (idle, waiting, paused and why); then, a line
    each, the last delivery error of the tenants that have one (how long ago: ``now``)."""
    where = (
        f"in the database's tables, {status.processes} live processes on any host"
        if status.engine == "postgresql"
        else f"on disk ({status.journal_bytes} in journals), {status.processes} live processes"
    )
    lines = [f"spool {status.path}", f"  {status.file_bytes} bytes {where}"]
    if not status.tenants:
        lines.append("  empty")
        return lines
    width = max(6, *(len(t.tenant) for t in status.tenants))
    lines.append(
        f"  {'tenant':<{width}}  {'queued':>8}  {'leased':>7}  {'dead':>6}  {'oldest':>6}  state"
    )
    for t in status.tenants:
        state = f"paused: {t.paused}" if t.paused else ("waiting" if t.queued else "idle")
        lines.append(
            f"  {t.tenant:<{width}}  {t.queued:>8}  {t.leased:>7}  {t.dead_letters:>6}  "
            f"{age(t.oldest_age):>6}  {state}"
        )
    for t in status.tenants:
        if t.last_error is not None:
            lines.append(f"  last error of {shown(t.tenant)}: {error_note(t.last_error, now)}")
    return lines


def age(seconds: float | None) -> str:
    """``42s`` under two minutes, ``17m`` under two hours, then ``3.5h``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# -- dead-letters -------------------------------------------------------------------------


def dead_letter_rows(letters: Sequence[DeadLetter]) -> list[str]:
    """A tab-separated row a dead letter: id, tenant, kind, when it failed (UTC), HTTP
    status (``-`` without one), reason."""
    return [
        f"{d.id}\t{d.tenant}\t{d.kind}\t{when(d.failed_at)}\t"
        f"{d.status if d.status is not None else '-'}\t{d.reason}"
        for d in letters
    ]


def when(ts: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- demo ---------------------------------------------------------------------------------


def demo_table(
    tenants: Sequence[str],
    events: Sequence[str],
    emitted: Mapping[tuple[str, str], int],
    accepted: Mapping[tuple[str, str], int],
) -> tuple[list[str], bool]:
    """The demo's table, a row per tenant and event (``MISMATCH`` where emitted and
    accepted differ) and a total; with True when every row matches."""
    width = max(len(e) for e in events)
    lines = [f"{'tenant':<8}  {'event':<{width}}  {'emitted':>7}  {'accepted':>8}"]
    ok = True
    for tenant in tenants:
        for event in events:
            sent, got = emitted.get((tenant, event), 0), accepted.get((tenant, event), 0)
            mark = "" if sent == got else "  MISMATCH"
            ok = ok and sent == got
            lines.append(f"{tenant:<8}  {event:<{width}}  {sent:>7}  {got:>8}{mark}")
    total_sent, total_got = sum(emitted.values()), sum(accepted.values())
    lines.append(f"{'total':<8}  {'':<{width}}  {total_sent:>7}  {total_got:>8}")
    return lines, ok
