"""The command line's summaries and exit statuses, as the pure functions that make them."""

from __future__ import annotations

from collections import Counter

import attrs
import pytest
from _snapshots import stats

from selligent_segment.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNDELIVERED,
    EXIT_USAGE,
)
from selligent_segment.cli._summary import (
    TenantRun,
    age,
    dead_letter_rows,
    delivery_summary,
    demo_table,
    error_note,
    flush_exit_status,
    flush_summary,
    only_paused_left,
    queued_tenants,
    reading_summary,
    rejects_summary,
    retry_summary,
    send_exit_status,
    send_run,
    spool_status_table,
    tenant_table,
    undelivered_tenants,
    when,
    why,
)
from selligent_segment.delivery._stats import LastError, TenantStats
from selligent_segment.spool._file import DeadLetter, SpoolStatus, TenantBacklog


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


def test_a_run_counts_its_own_events_and_those_it_did_not_accept() -> None:
    run = send_run(stats(acme=TenantStats(accepted=10, delivered=7, queued=3)), {})
    assert (run.total("accepted"), run.total("delivered"), run.not_delivered) == (10, 7, 3)
    run = send_run(
        stats(acme=TenantStats(accepted=10, delivered=7, queued=3)), {"acme": 2, "globex": 1}
    )
    assert run.not_delivered == 6


def test_events_emitted_but_still_in_the_journal_count_as_not_delivered() -> None:
    """With a spool file another process held locked, ``emit`` took 6 events into the
    journal and none reached the file: ``accepted`` stayed 0, and the run said "0 not
    delivered" and exited 0 with every event still waiting."""
    stuck = stats(acme=TenantStats(accepted=0, delivered=0))
    run = send_run(stuck, {}, left={}, emitted={"acme": 6})
    (acme,) = run.tenants
    assert (acme.accepted, acme.delivered, acme.not_delivered) == (6, 0, 6)
    assert send_exit_status(None, run.not_delivered, 0) == EXIT_UNDELIVERED
    part = stats(acme=TenantStats(accepted=4, delivered=4))
    assert send_run(part, {}, left={}, emitted={"acme": 6}).not_delivered == 2
    assert send_run(part, {}, left={}, emitted={"acme": 4}).not_delivered == 0
    # The file readable meanwhile (WAL): what this run put in it since it began, nothing.
    shared = send_run(stuck, {}, left={}, recent={}, emitted={"acme": 6})
    (acme,) = shared.tenants
    assert (acme.accepted, acme.delivered, acme.not_delivered) == (6, 0, 6)
    # The file unreadable at the end: stats' queue counts the journal's events too.
    unread = stats(acme=TenantStats(accepted=2, delivered=2, queued=2))
    (acme,) = send_run(unread, {}, None, None, emitted={"acme": 4}).tenants
    assert (acme.accepted, acme.delivered, acme.not_delivered) == (4, 2, 2)
    assert (acme.earlier_delivered, acme.earlier_left) == (0, 0)


def test_a_resumed_run_tells_its_events_from_those_earlier_runs_left() -> None:
    """The issue's report: 6 events accepted, 12 delivered (6 left by a failed run) said
    "-6 not delivered" and exited 3. This run delivered its 6; the other 6 were earlier."""
    resumed = stats(acme=TenantStats(accepted=6, delivered=12))
    run = send_run(resumed, {}, left={})
    (acme,) = run.tenants
    assert (acme.accepted, acme.delivered, acme.not_delivered) == (6, 6, 0)
    assert (acme.earlier_delivered, acme.earlier_left) == (6, 0)
    assert send_exit_status(None, run.not_delivered, 0) == EXIT_OK
    assert delivery_summary(run) == [
        "selligent-segment: 6 events accepted, 6 delivered, 0 not delivered",
        "  tenant  accepted  delivered  not delivered",
        "  acme           6          6              0",
        "selligent-segment: also delivered 6 events earlier runs left in the spool",
    ]
    assert undelivered_tenants(run) == []


def test_earlier_events_still_left_are_reported_but_do_not_count_against_this_run() -> None:
    # 6 earlier events and 4 new ones for acme; 8 delivered (the 6 earlier first), 2 left.
    # globex was not in this run at all: its 5 leftovers are still in the file.
    run = send_run(
        stats(acme=TenantStats(accepted=4, delivered=8)), {}, left={"acme": 2, "globex": 5}
    )
    acme, globex = run.tenants
    assert (acme.delivered, acme.not_delivered, acme.earlier_delivered) == (2, 2, 6)
    assert (globex.accepted, globex.not_delivered, globex.earlier_left) == (0, 0, 5)
    assert run.not_delivered == 2
    assert delivery_summary(run)[-1] == (
        "selligent-segment: also delivered 6 events earlier runs left in the spool; 5 of "
        "those are still not delivered (not counted in the exit status; see: "
        "selligent-segment spool status)"
    )
    assert undelivered_tenants(run) == [
        "selligent-segment: tenant 'acme': 2 not delivered; 2 stay queued in the spool",
        "selligent-segment: tenant 'globex': 5 left by earlier runs; 5 stay queued in the spool",
    ]


def test_an_earlier_event_that_failed_counts_against_this_run_never_the_reverse() -> None:
    # 1 earlier event and 2 new: 2 delivered, 1 rejected. Which one was rejected cannot
    # be told from counts: the summary assumes the earlier one was delivered, so it never
    # says this run's events all arrived when one may not have.
    run = send_run(stats(acme=TenantStats(accepted=2, delivered=2, rejected={"rejected": 1})), {})
    (acme,) = run.tenants
    assert (acme.delivered, acme.not_delivered, acme.earlier_delivered) == (1, 1, 1)


def test_delivery_summary_is_a_line_of_totals_then_the_tenant_table() -> None:
    snapshot = stats(
        acme=TenantStats(accepted=1200, delivered=1200),
        globex=TenantStats(accepted=5, delivered=2, queued=3),
    )
    assert delivery_summary(send_run(snapshot, {"initech": 4})) == [
        "selligent-segment: 1,205 events accepted, 1,202 delivered, 7 not delivered",
        "  tenant   accepted  delivered  not delivered",
        "  acme        1,200      1,200              0",
        "  globex          5          2              3",
        "  initech         0          0              4",
    ]


def test_delivery_summary_without_tenants_has_no_table() -> None:
    assert delivery_summary(send_run(stats(), {})) == [
        "selligent-segment: 0 events accepted, 0 delivered, 0 not delivered"
    ]


def test_tenant_table_aligns_to_the_widest_cell() -> None:
    snapshot = stats(**{"a-very-long-tenant": TenantStats(accepted=12_345_678, delivered=1)})
    assert tenant_table(send_run(snapshot, {}).tenants) == [
        "  tenant                accepted  delivered  not delivered",
        "  a-very-long-tenant  12,345,678          1     12,345,677",
    ]


def test_undelivered_tenants_one_line_each_in_name_order_with_why() -> None:
    snapshot = stats(
        acme=TenantStats(accepted=3, delivered=3),
        globex=TenantStats(accepted=4, delivered=2, rejected={"rejected": 2}, dropped={}),
        initech=TenantStats(accepted=2, queued=2, paused="write key refused (401)"),
    )
    run = send_run(snapshot, {"umbrella": 5})
    assert undelivered_tenants(run, {"globex"}) == [
        "selligent-segment: tenant 'globex': 2 not delivered; 2 rejected",
        "selligent-segment: tenant 'initech': 2 not delivered; paused: write key refused (401); "
        "2 stay queued in the spool",
        "selligent-segment: tenant 'umbrella': 5 not delivered; 5 not accepted (spool full)",
    ]


def test_undelivered_tenants_escape_what_a_terminal_would_obey() -> None:
    run = send_run(stats(), {"evil\x1b[2J": 1})
    assert undelivered_tenants(run) == [
        "selligent-segment: tenant 'evil\\x1b[2J': 1 not delivered; 1 not accepted (spool full)"
    ]


def test_why_joins_every_reason_and_ends_with_the_last_error() -> None:
    detail = TenantStats(
        accepted=3,
        rejected={"rejected": 2},
        dropped={"retries_exhausted": 1},
        paused="no write key",
        last_error=LastError("retries_exhausted: HTTP 503", 1.0, None),
    )
    (tenant,) = send_run(stats(acme=detail), {"acme": 3}).tenants
    assert why(tenant) == (
        "6 not delivered; 2 rejected; 1 retries_exhausted; paused: no write key; "
        "3 not accepted (spool full); last error: retries_exhausted: HTTP 503"
    )
    assert why(TenantRun("acme")) == "not delivered"


def test_the_last_error_shows_its_status_once_and_its_age() -> None:
    assert error_note(LastError("connection refused", 100.0)) == "connection refused"
    assert error_note(LastError("Service Unavailable", 100.0, 503), now=142.0) == (
        "Service Unavailable (HTTP 503), 42s ago"
    )
    assert error_note(LastError("HTTP 503", 100.0, 503)) == "HTTP 503"
    assert error_note(LastError("bad\x1b[2J", 0.0)) == "'bad\\x1b[2J'"


def test_the_json_of_a_run_has_totals_earlier_events_and_tenants() -> None:
    error = LastError("HTTP 503", 5.0, 503)
    run = send_run(stats(acme=TenantStats(accepted=6, delivered=12, last_error=error)), {}, {})
    assert run.to_dict() == {
        "accepted": 6,
        "delivered": 6,
        "not_delivered": 0,
        "not_accepted": 0,
        "earlier": {"delivered": 6, "left": 0},
        "tenants": {
            "acme": {
                "accepted": 6,
                "delivered": 6,
                "not_delivered": 0,
                "not_accepted": 0,
                "earlier_delivered": 6,
                "earlier_left": 0,
                "queued": 0,
                "rejected": {},
                "dropped": {},
                "paused": None,
                "last_error": {"text": "HTTP 503", "at": 5.0, "status": 503},
            }
        },
    }


def test_retries_are_labelled_as_events_and_re_sends() -> None:
    """The demo said "6981 events retried" for 1,923 events: that count is of re-sends."""
    snapshot = attrs.evolve(stats(), retried=6981, retried_events=1400, requests=400)
    assert retry_summary(snapshot) == (
        "400 requests; 1,400 events retried (6,981 re-sends: each retry of a batch counts "
        "all its events)"
    )


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


def test_flush_summary_gives_the_last_error_unless_the_pause_says_it() -> None:
    refused = LastError("write key refused (401)", 100.0, 401)
    down = LastError("HTTP 503: service_unavailable", 40.0, 503)
    status = spool_status(
        attrs.evolve(backlog("acme", 2), last_error=down),
        attrs.evolve(backlog("globex", 3, paused="write key refused (401)"), last_error=refused),
    )
    assert flush_summary(0, status, now=160.0)[1:] == [
        "  tenant 'acme': 2 events not delivered; last error: HTTP 503: service_unavailable, "
        "2m ago",
        "  tenant 'globex': 3 events not delivered (write key refused (401))",
    ]


def test_spool_status_table_ends_with_the_last_errors() -> None:
    status = spool_status(
        attrs.evolve(backlog("acme", 2), last_error=LastError("connection refused", 100.0)),
        backlog("globex", 1),
    )
    assert spool_status_table(status, now=142.0)[-1] == (
        "  last error of 'acme': connection refused, 42s ago"
    )


def test_flush_dead_letters_alone_are_not_undelivered() -> None:
    status = spool_status(backlog("acme", dead=2))
    assert flush_summary(0, status) == [
        "delivered 0 events; 0 left in /var/spool.db",
        "2 dead letters kept; see: selligent-segment dead-letters list --spool /var/spool.db",
    ]
    assert flush_exit_status(status) == EXIT_OK


def test_flush_with_journals_no_live_process_holds_is_not_done() -> None:
    """A file another process held locked: the journals could not be replayed into it,
    and ``flush`` said "0 left" and exited 0 with every event still in them."""
    stuck = attrs.evolve(spool_status(), journal_bytes=1387, processes=0)
    assert flush_summary(0, stuck) == [
        "delivered 0 events; 0 left in /var/spool.db",
        "1387 bytes of journals are not in the file yet: the next start (or flush) replays them",
    ]
    assert flush_exit_status(stuck) == EXIT_UNDELIVERED
    live = attrs.evolve(spool_status(), journal_bytes=1387, processes=1)  # theirs
    assert flush_exit_status(live) == EXIT_OK
    assert len(flush_summary(0, live)) == 1


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


def test_a_shared_spool_file_counts_only_what_is_left_of_this_runs_events() -> None:
    """This run accepted and delivered 10; 3 older events of another process are in
    flight (queued): not this run's. The first-in-first-out count alone took them for
    earlier events it delivered, so '3 not delivered', exit 3."""
    mine = stats(acme=TenantStats(accepted=10, delivered=10))
    alone = send_run(mine, {}, left={"acme": 3})
    assert alone.not_delivered == 3  # the count without knowing what is recent
    run = send_run(mine, {}, left={"acme": 3}, recent={"acme": (0, 0, 0)})
    assert (run.total("delivered"), run.not_delivered) == (10, 0)
    assert (run.total("earlier_delivered"), run.total("earlier_left")) == (0, 3)
    assert send_exit_status(None, run.not_delivered, 0) == EXIT_OK


def test_recent_events_left_in_the_file_stay_undelivered() -> None:
    # this process delivered 10 earlier events; its own 10 are all still queued
    mine = stats(acme=TenantStats(accepted=10, delivered=10, queued=10))
    run = send_run(mine, {}, left={"acme": 10}, recent={"acme": (10, 0, 0)})
    assert (run.total("delivered"), run.not_delivered) == (0, 10)
    assert (run.total("earlier_delivered"), run.total("earlier_left")) == (10, 0)
    # 2 of this run's were refused for good (dead letters), 1 older one too
    failed = TenantStats(accepted=5, delivered=3, rejected={"rejected": 3})
    run = send_run(stats(acme=failed), {}, left={}, recent={"acme": (0, 2, 1)})
    assert (run.total("delivered"), run.not_delivered, run.total("earlier_left")) == (3, 2, 1)
