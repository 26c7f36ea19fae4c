"""Log records are structured: each delivery, back-pressure and spool line carries
``tenant``, ``reason`` and ``status`` (where it has them) as attributes a JSON formatter
sees, never repeats the logger's name in its text, and never holds a write key."""

from __future__ import annotations

import logging
import re

import pytest
from _delivery import fake_emitter, record

from selligent_segment import BatchPolicy, Emitter, RetryPolicy
from selligent_segment.testing import MockRequest, MockResponse, MockTransport

SENDERS = 2
_REFUSED = re.compile(r"spool full: ([\d,]+) events refused")
ONE_PER_REQUEST = BatchPolicy(max_messages=1, linger=0.0)


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("selligent_segment")]


def reasons(caplog: pytest.LogCaptureFixture) -> set[str]:
    return {getattr(r, "reason", "") for r in ours(caplog)}


def with_reason(caplog: pytest.LogCaptureFixture, reason: str) -> logging.LogRecord:
    found = [r for r in ours(caplog) if getattr(r, "reason", None) == reason]
    assert found, f"no record with reason={reason}: {[r.getMessage() for r in ours(caplog)]}"
    return found[0]


def test_retry_pause_and_refusal_lines_carry_tenant_reason_and_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="selligent_segment")
    answers = {"key-acme": [503, 400], "key-globex": [401]}

    def handler(request: MockRequest) -> MockResponse | int:
        script = answers[request.write_key]
        return script.pop(0) if script else MockResponse.ok()

    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=5)
    em, _, clock = fake_emitter(handler, batch=ONE_PER_REQUEST, retry=retry)
    try:
        em.emit(record(1, "acme"))
        em.emit(record(2, "acme"))
        em.emit(record(3, "globex"))
        # The records themselves are awaited: a log line follows its count.
        assert clock.run_until(
            lambda: {"retry", "rejected", "paused"} <= reasons(caplog), waiters=SENDERS
        )
    finally:
        em.close(0)
    retried = with_reason(caplog, "retry")
    assert (retried.tenant, retried.status, retried.levelno) == ("acme", 503, logging.INFO)
    refused = with_reason(caplog, "rejected")
    assert (refused.tenant, refused.status, refused.levelno) == ("acme", 400, logging.ERROR)
    paused = with_reason(caplog, "paused")
    assert (paused.tenant, paused.status, paused.levelno) == ("globex", 401, logging.ERROR)
    for r in ours(caplog):
        text = r.getMessage()
        assert not text.startswith("selligent-segment:"), text
        assert "key-" not in text
        assert "key-" not in repr(vars(r)), r


def test_the_spool_full_line_carries_its_reason_and_count(
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
    # every refused event is counted in exactly one line, however many came while the
    # line was throttled: in its ``count`` and in its text
    full = [r for r in ours(caplog) if getattr(r, "reason", None) == "spool_full"]
    assert sum(r.count for r in full) == refused
    in_text = [_REFUSED.search(r.getMessage()) for r in full]
    assert sum(int(m.group(1).replace(",", "")) for m in in_text if m) == refused
    closing = with_reason(caplog, "unsent_at_close")
    assert closing.tenant == "acme"
    assert not any(r.getMessage().startswith("selligent-segment:") for r in ours(caplog))
