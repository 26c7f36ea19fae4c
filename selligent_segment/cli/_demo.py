"""``selligent-segment demo``: the command; the campaign it runs is in
:mod:`selligent_segment.cli._demo_campaign`, imported only when the demo runs (it starts a
LocalSegment, which no other command needs)."""

from __future__ import annotations

import argparse

from selligent_segment.cli._base import Command

__all__ = ["DEMO"]


_DEMO_EPILOG = """\
Starts a Segment stand-in on loopback (nothing leaves the machine), simulates a campaign
for three tenants across all six events (user ids and email-only recipients), through
the durable spool in a temporary directory, with a 1.5 s outage and two 429s on the way;
ends with a table per tenant and event of emitted vs accepted.

exit status:
  0  every emitted event was accepted exactly once
  1  emitted and accepted differ
"""


def _run_demo(args: argparse.Namespace) -> int:
    from selligent_segment.cli._demo_campaign import run_demo

    return run_demo()


DEMO = Command(
    name="demo",
    help="a three-tenant campaign to a local Segment stand-in, verified",
    description="Run a short demonstration; nothing to configure.",
    epilog=_DEMO_EPILOG,
    configure=lambda parser: None,
    run=_run_demo,
)
