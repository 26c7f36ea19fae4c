"""What the counts of a run say: the lines and tables of the commands' summaries and their
exit statuses, as pure functions (no printing, no clock, no files), so that each can be
tested on values; the commands print what these return.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone

from selligent_segment._errors import shown
from selligent_segment.cli._base import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNDELIVERED,
    PROG,
)
from selligent_segment.delivery._stats import Stats, TenantStats
from selligent_segment.spool._file import DeadLetter, SpoolStatus

__all__ = [
    "RESUME_HINT",
    "age",
    "dead_letter_rows",
    "delivery_summary",
    "demo_table",
    "flush_exit_status",
    "flush_summary",
    "only_paused_left",
    "queued_tenants",
    "reading_summary",
    "rejects_summary",
    "send_exit_status",
    "spool_status_table",
    "tenant_table",
    "undelivered_count",
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


def undelivered_count(stats: Stats, not_accepted: Mapping[str, int]) -> int:
    """Events accepted but not delivered, plus those the emitter did not accept."""
    return stats.accepted - stats.delivered + sum(not_accepted.values())


def delivery_summary(emitted: int, stats: Stats, not_accepted: Mapping[str, int]) -> list[str]:
    """The line of totals, then the table per tenant (when there is a tenant)."""
    lines = [
        f"{PROG}: {emitted:,} events accepted, {stats.delivered:,} delivered, "
        f"{undelivered_count(stats, not_accepted):,} not delivered"
    ]
    tenants = sorted(set(stats.tenants) | set(not_accepted))
    if tenants:
        lines.extend(tenant_table(tenants, stats, not_accepted))
    return lines


def tenant_table(
    tenants: Sequence[str], stats: Stats, not_accepted: Mapping[str, int]
) -> list[str]:
    """A header and one row a tenant: accepted, delivered, not delivered; the tenants left
    aligned, the numbers right aligned, every line indented by two spaces."""
    rows = [("tenant", "accepted", "delivered", "not delivered")]
    for tenant in tenants:
        detail = stats.tenants.get(tenant, TenantStats())
        missing = detail.accepted - detail.delivered + not_accepted.get(tenant, 0)
        rows.append((tenant, f"{detail.accepted:,}", f"{detail.delivered:,}", f"{missing:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    return lines


def undelivered_tenants(
    stats: Stats, not_accepted: Mapping[str, int], failed: Collection[str]
) -> list[str]:
    """One line a tenant with events not delivered (failed, still queued or not accepted),
    in name order, saying why; the tenant is shown escaped, its key never."""
    names = set(failed) | queued_tenants(stats) | set(not_accepted)
    return [
        f"{PROG}: tenant {shown(tenant)}: "
        f"{why(stats.tenants.get(tenant), not_accepted.get(tenant, 0))}"
        for tenant in sorted(names)
    ]


def why(detail: TenantStats | None, not_accepted: int) -> str:
    """Why a tenant's events were not delivered: each rejection and drop reason with its
    count, the pause, the events the spool had no room for; else ``not delivered``."""
    parts = []
    if detail is not None:
        parts = [f"{n} {reason}" for reason, n in {**detail.rejected, **detail.dropped}.items()]
        if detail.paused:
            parts.append(f"paused: {detail.paused}")
    if not_accepted:
        parts.append(f"{not_accepted} not accepted (spool full)")
    return "; ".join(parts) or "not delivered"


def queued_tenants(stats: Stats) -> set[str]:
    """The tenants with events still queued."""
    return {t for t, s in stats.tenants.items() if s.queued}


def only_paused_left(stats: Stats) -> bool:
    """True when events are queued and every tenant holding them is paused (a refused or
    missing key): waiting longer will not deliver them."""
    queued = queued_tenants(stats)
    return bool(queued) and all(stats.tenants[t].paused for t in queued)


# -- flush --------------------------------------------------------------------------------


def flush_summary(delivered: int, status: SpoolStatus) -> list[str]:
    """What ``flush`` delivered, what is left per tenant (and why), the dead letters kept."""
    lines = [f"delivered {delivered} events; {status.queued} left in {status.path}"]
    for t in status.tenants:
        if t.queued:
            paused = f" ({t.paused})" if t.paused else ""
            lines.append(f"  tenant {shown(t.tenant)}: {t.queued} events not delivered{paused}")
    if status.dead_letters:
        lines.append(
            f"{status.dead_letters} dead letters kept; see: {PROG} dead-letters "
            f"list --spool {status.path}"
        )
    return lines


def flush_exit_status(status: SpoolStatus) -> int:
    """3 while the spool holds deliverable events, else 0. Dead letters are kept and
    listed, but not deliverable: only what is queued counts."""
    return EXIT_UNDELIVERED if any(t.queued for t in status.tenants) else EXIT_OK


# -- spool status -------------------------------------------------------------------------


def spool_status_table(status: SpoolStatus) -> list[str]:
    """The spool file, its sizes, then a row a tenant: queued, leased, dead letters, the
    age of the oldest event and the state (idle, waiting, paused and why)."""
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
