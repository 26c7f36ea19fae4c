"""A Stats snapshot built by hand, for the tests of what the commands make of one
(test_cli_summary, test_cli_output)."""

from __future__ import annotations

from selligent_segment.delivery._stats import Stats, TenantStats


def stats(**tenants: TenantStats) -> Stats:
    """A Stats snapshot of ``tenants`` (by name) whose totals are their sums."""
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
