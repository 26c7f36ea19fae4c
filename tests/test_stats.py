"""Delivery counters: each tenant's last delivery error (text, time, status), recorded
where the dispatcher and the settler meet an error, cut to its limit, never a key."""

from __future__ import annotations

from _delivery import acme_last_error

from selligent_segment import LastError, RetryPolicy
from selligent_segment.delivery._stats import ERROR_TEXT_MAX, Counters
from selligent_segment.testing import MockRequest, MockResponse


def test_a_recorded_error_is_the_tenants_last_error_with_its_time_and_status() -> None:
    times = iter([100.0, 200.0])
    counters = Counters(now=lambda: next(times))
    counters.set_error("acme", counters.new_error("HTTP 503", 503))
    counters.set_error("acme", counters.new_error("connection refused"))
    last = counters.snapshot({}, {}).tenants["acme"].last_error
    assert last == LastError("connection refused", 200.0, None)
    assert last.to_dict() == {
        "text": "connection refused",
        "at": 200.0,
        "status": None,
    }


def test_a_tenant_without_an_error_has_none() -> None:
    counters = Counters()
    counters.add("accepted", "acme")
    assert counters.snapshot({}, {}).tenants["acme"].last_error is None


def test_a_long_error_text_is_cut_to_the_limit() -> None:
    counters = Counters(now=lambda: 1.0)
    recorded = counters.new_error("x" * 5000)
    assert len(recorded.text) == ERROR_TEXT_MAX
    assert recorded.text.endswith("\u2026")


def test_a_retried_request_leaves_its_error_and_a_later_success_keeps_it() -> None:
    answers = iter([MockResponse.error(503, "down for maintenance")])

    def handler(request: MockRequest) -> MockResponse:
        return next(answers, MockResponse.ok())

    last = acme_last_error(handler, lambda stats: stats.delivered == 1)
    assert last is not None
    assert last.status == 503
    assert "down for maintenance" in last.text
    assert "key-acme" not in last.text


def test_a_refused_key_is_the_last_error_of_its_paused_tenant() -> None:
    last = acme_last_error(
        lambda request: MockResponse.error(401, "bad key"),
        lambda stats: getattr(stats.tenants.get("acme"), "paused", None) is not None,
    )
    assert last is not None
    assert (last.text, last.status) == ("write key refused (401)", 401)


def test_events_given_up_leave_the_reason_as_the_last_error() -> None:
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2)
    last = acme_last_error(lambda request: 500, lambda stats: bool(stats.dropped), retry=retry)
    assert last is not None
    assert last.text.startswith("retries_exhausted: ")
    assert last.status is None  # given up: no one answer stands for the batch
