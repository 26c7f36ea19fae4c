"""The command line's summaries and exit statuses, as the pure functions that make them."""

from __future__ import annotations

from collections import Counter

import pytest

from selligent_segment.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
)
from selligent_segment.cli._summary import (
    age,
    dead_letter_rows,
    delivery_summary,
    demo_table,
    flush_exit_status,
    flush_summary,
    only_paused_left,
    queued_tenants,
    reading_summary,
    rejects_summary,
    send_exit_status,
    spool_status_table,
    tenant_table,
    undelivered_count,
    undelivered_tenants,
    when,
    why,
)
from selligent_segment.delivery._stats import Stats, TenantStats
from selligent_segment.spool._file import DeadLetter, SpoolStatus, TenantBacklog


def stats(**tenants: TenantStats) -> Stats:
    """A Stats snapshot whose totals are the sums of ``tenants``."""
    return Stats(
        accepted=sum(t.accepted for t in tenants.values()),
        delivered=sum(t.delivered for t in tenants.values()),
        retried=0,
        queued=sum(t.queued for t in tenants.values()),
        rejected={},
        dropped={},
        refused={},
        requests=0,
        tenants=tenants,
    )


def backlog(
    tenant: str,
    queued: int = 0,
    *,
    leased: int = 0,
    dead: int = 0,
    oldest: float | None = None,
    paused: str | None = None,
) -> TenantBacklog:
    return TenantBacklog(
        tenant=tenant,
        queued=queued,
        leased=leased,
        dead_letters=dead,
        oldest_age=oldest,
        paused=paused,
    )


def letter(
    id: int, tenant: str, kind: str, reason: str, status: int | None, *, failed_at: float
) -> DeadLetter:
    return DeadLetter(
        id=id,
        tenant=tenant,
        message_id=f"m-{id}",
        kind=kind,
        reason=reason,
        status=status,
        accepted_at=0.0,
        failed_at=failed_at,
        body=b"{}",
    )


def spool_status(*tenants: TenantBacklog) -> SpoolStatus:
    return SpoolStatus(
        path="/var/spool.db", file_bytes=4096, journal_bytes=512, processes=1, tenants=tenants
    )


# -- the exit status of send ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stopped", "undelivered", "invalid", "expected"),
    [
        (None, 0, 0, EXIT_OK),
        (None, 0, 2, EXIT_INVALID),
        (None, 5, 0, EXIT_UNDELIVERED),
        (None, 5, 2, EXIT_UNDELIVERED),  # 3 takes precedence over 1
        (EXIT_USAGE, 5, 2, EXIT_USAGE),  # a run stopped early says why first
        (EXIT_INTERRUPTED, 5, 2, EXIT_INTERRUPTED),
        (EXIT_INTERRUPTED, 0, 0, EXIT_INTERRUPTED),
        (EXIT_USAGE, 0, 0, EXIT_USAGE),
    ],
)
def test_send_exit_status_precedence(
    stopped: int | None, undelivered: int, invalid: int, expected: int
) -> None:
    assert send_exit_status(stopped, undelivered, invalid) == expected


# -- reading ---------------------------------------------------------------------------------


def test_reading_summary_counts_and_plural() -> None:
    assert reading_summary(1234, 34, 1) == (
        "selligent-segment: read 1,234 records from 1 input: 1,200 valid, 34 invalid"
    )
    assert reading_summary(0, 0, 2) == (
        "selligent-segment: read 0 records from 2 inputs: 0 valid, 0 invalid"
    )


def test_rejects_summary_names_both_files() -> None:
    assert rejects_summary(1500, "bad.csv", "bad.csv.reasons") == (
        "selligent-segment: 1,500 invalid records written to bad.csv, "
        "their reasons to bad.csv.reasons"
    )


# -- delivery --------------------------------------------------------------------------------


def test_undelivered_counts_what_was_not_accepted_too() -> None:
    snapshot = stats(acme=TenantStats(accepted=10, delivered=7, queued=3))
    assert undelivered_count(snapshot, {}) == 3
    assert undelivered_count(snapshot, {"acme": 2, "globex": 1}) == 6


def test_delivery_summary_is_a_line_of_totals_then_the_tenant_table() -> None:
    snapshot = stats(
        acme=TenantStats(accepted=1200, delivered=1200),
        globex=TenantStats(accepted=5, delivered=2, queued=3),
    )
    assert delivery_summary(1205, snapshot, {"initech": 4}) == [
        "selligent-segment: 1,205 events accepted, 1,202 delivered, 7 not delivered",
        "  tenant   accepted  delivered  not delivered",
        "  acme        1,200      1,200              0",
        "  globex          5          2              3",
        "  initech         0          0              4",
    ]


def test_delivery_summary_without_tenants_has_no_table() -> None:
    assert delivery_summary(0, stats(), {}) == [
        "selligent-segment: 0 events accepted, 0 delivered, 0 not delivered"
    ]


def test_tenant_table_aligns_to_the_widest_cell() -> None:
    snapshot = stats(**{"a-very-long-tenant": TenantStats(accepted=12_345_678, delivered=1)})
    assert tenant_table(["a-very-long-tenant"], snapshot, {}) == [
        "  tenant                accepted  delivered  not delivered",
        "  a-very-long-tenant  12,345,678          1     12,345,677",
    ]


def test_undelivered_tenants_one_line_each_in_name_order_with_why() -> None:
    snapshot = stats(
        acme=TenantStats(accepted=3, delivered=3),
        globex=TenantStats(accepted=4, delivered=1, rejected={"rejected": 2}, dropped={}),
        initech=TenantStats(accepted=2, queued=2, paused="write key refused (401)"),
    )
    assert undelivered_tenants(snapshot, {"umbrella": 5}, {"globex"}) == [
        "selligent-segment: tenant 'globex': 2 rejected",
        "selligent-segment: tenant 'initech': paused: write key refused (401)",
        "selligent-segment: tenant 'umbrella': 5 not accepted (spool full)",
    ]


def test_undelivered_tenants_escape_what_a_terminal_would_obey() -> None:
    assert undelivered_tenants(stats(), {}, {"evil\x1b[2J"}) == [
        "selligent-segment: tenant 'evil\\x1b[2J': not delivered"
    ]


def test_why_joins_every_reason() -> None:
    detail = TenantStats(
        rejected={"rejected": 2},
        dropped={"retries_exhausted": 1},
        paused="no write key",
    )
    assert why(detail, 3) == (
        "2 rejected; 1 retries_exhausted; paused: no write key; 3 not accepted (spool full)"
    )
    assert why(None, 0) == "not delivered"
    assert why(TenantStats(), 0) == "not delivered"


def test_only_paused_left_when_every_queued_tenant_is_paused() -> None:
    paused = TenantStats(queued=2, paused="write key refused (403)")
    assert not only_paused_left(stats())  # nothing queued: delivery is done, not stuck
    assert only_paused_left(stats(acme=paused, globex=TenantStats(delivered=4)))
    assert not only_paused_left(stats(acme=paused, globex=TenantStats(queued=1)))
    assert queued_tenants(stats(acme=paused, globex=TenantStats(queued=1))) == {"acme", "globex"}


# -- flush ------------------------------------------------------------------------------------


def test_flush_summary_names_what_is_left_and_the_dead_letters() -> None:
    status = spool_status(
        backlog("acme"),
        backlog("globex", 3, paused="write key refused (401)"),
        backlog("initech", 2, dead=4),
    )
    assert flush_summary(10, status) == [
        "delivered 10 events; 5 left in /var/spool.db",
        "  tenant 'globex': 3 events not delivered (write key refused (401))",
        "  tenant 'initech': 2 events not delivered",
        "4 dead letters kept; see: selligent-segment dead-letters list --spool /var/spool.db",
    ]
    assert flush_exit_status(status) == EXIT_UNDELIVERED


def test_flush_dead_letters_alone_are_not_undelivered() -> None:
    status = spool_status(backlog("acme", dead=2))
    assert flush_summary(0, status) == [
        "delivered 0 events; 0 left in /var/spool.db",
        "2 dead letters kept; see: selligent-segment dead-letters list --spool /var/spool.db",
    ]
    assert flush_exit_status(status) == EXIT_OK


# -- spool status ------------------------------------------------------------------------------


def test_spool_status_table() -> None:
    status = spool_status(
        backlog("acme", 12, leased=5, oldest=90),
        backlog("globex", 1, dead=2, oldest=4000, paused="no write key"),
        backlog("x"),
    )
    assert spool_status_table(status) == [
        "spool /var/spool.db",
        "  4096 bytes on disk (512 in journals), 1 live processes",
        "  tenant    queued   leased    dead  oldest  state",
        "  acme          12        5       0     90s  waiting",
        "  globex         1        0       2     67m  paused: no write key",
        "  x              0        0       0       -  idle",
    ]


def test_spool_status_table_of_an_empty_spool() -> None:
    assert spool_status_table(spool_status())[-1] == "  empty"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0, "0s"), (119, "119s"), (120, "2m"), (7199, "120m"), (7200, "2.0h")],
)
def test_age(seconds: float | None, shown: str) -> None:
    assert age(seconds) == shown


# -- dead-letters -------------------------------------------------------------------------------


def test_dead_letter_rows_are_tab_separated() -> None:
    letters = [
        letter(7, "acme", "opened", "rejected: bad email", 400, failed_at=86400.0),
        letter(8, "globex", "delivered", "too_large", None, failed_at=0.0),
    ]
    assert dead_letter_rows(letters) == [
        "7\tacme\topened\t1970-01-02 00:00:00Z\t400\trejected: bad email",
        "8\tglobex\tdelivered\t1970-01-01 00:00:00Z\t-\ttoo_large",
    ]
    assert when(1700000000.5) == "2023-11-14 22:13:20Z"


# -- demo --------------------------------------------------------------------------------------


def test_demo_table_marks_a_mismatch() -> None:
    emitted = Counter({("acme", "Email Opened"): 3, ("acme", "Email Delivered"): 10})
    accepted = Counter({("acme", "Email Opened"): 2, ("acme", "Email Delivered"): 10})
    lines, ok = demo_table(["acme"], ["Email Delivered", "Email Opened"], emitted, accepted)
    assert not ok
    assert lines == [
        "tenant    event            emitted  accepted",
        "acme      Email Delivered       10        10",
        "acme      Email Opened           3         2  MISMATCH",
        "total                           13        12",
    ]
    lines, ok = demo_table(["acme"], ["Email Delivered", "Email Opened"], emitted, emitted)
    assert ok
    assert not any("MISMATCH" in line for line in lines)
