"""Back-pressure's log lines: every event refused because the spool is full is counted in
exactly one ERROR line, however many arrive while the line is throttled."""

from __future__ import annotations

import logging
import re

import pytest
from _delivery import record

from selligent_segment import Emitter
from selligent_segment.testing import MockTransport

_REFUSED = re.compile(r"spool full: ([\d,]+) events refused")


def refused_in(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The counts of the "events refused" lines logged."""
    return [
        int(m.group(1).replace(",", ""))
        for r in caplog.records
        if (m := _REFUSED.search(r.getMessage()))
    ]


def test_every_event_dropped_when_full_is_counted_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="selligent_segment")
    em = Emitter(
        "key-acme",
        transport=MockTransport(lambda request: 503),
        max_spool_bytes=64 * 1024,
        max_pending=10,
        on_full="drop_newest",
    )
    try:
        accepted = sum(em.emit(record(i)) for i in range(3000))
    finally:
        em.close(0)
    refused = em.stats().refused["spool_full"]
    assert accepted + refused == 3000
    assert refused > 1000  # the spool (64 KiB) holds a few hundred of them
    assert sum(refused_in(caplog)) == refused
