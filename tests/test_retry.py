"""The retry policy: status table, Retry-After parsing, backoff and give-up rules."""

from __future__ import annotations

import pickle
import random
from email.utils import formatdate

import attrs
import pytest

from selligent_segment import ConfigurationError
from selligent_segment.delivery._retry import (
    JITTER_FRACTION,
    MAX_RETRY_AFTER,
    Backoff,
    GiveUp,
    Outcome,
    RetryPolicy,
    classify,
    parse_rate_limit_reset,
    parse_retry_after,
    server_wait,
)

NOW = 1_700_000_000.0  # a fixed wall clock for HTTP-date tests

# -- classify: the rules table from segment.md --------------------------------------------

RULES = {
    **{s: Outcome.DELIVERED for s in (200, 201, 202, 204, 299)},
    **{s: Outcome.REJECTED for s in (300, 301, 302, 303, 304, 307, 308, 399)},
    400: Outcome.REJECTED,
    401: Outcome.UNAUTHORIZED,
    402: Outcome.REJECTED,
    403: Outcome.UNAUTHORIZED,
    404: Outcome.REJECTED,
    405: Outcome.REJECTED,
    408: Outcome.RETRY,
    409: Outcome.REJECTED,
    410: Outcome.RETRY,
    411: Outcome.REJECTED,
    413: Outcome.REJECTED,
    415: Outcome.REJECTED,
    422: Outcome.REJECTED,
    429: Outcome.RATE_LIMITED,
    431: Outcome.REJECTED,
    451: Outcome.REJECTED,
    460: Outcome.RETRY,
    499: Outcome.REJECTED,
    500: Outcome.RETRY,
    501: Outcome.REJECTED,
    502: Outcome.RETRY,
    503: Outcome.RETRY,
    504: Outcome.RETRY,
    505: Outcome.REJECTED,
    507: Outcome.RETRY,
    511: Outcome.RETRY,
    520: Outcome.RETRY,
    599: Outcome.RETRY,
}


@pytest.mark.parametrize(("status", "expected"), sorted(RULES.items()))
def test_classify_follows_the_rules_table(status: int, expected: Outcome) -> None:
    assert classify(status) is expected


def test_classify_every_status_in_range_is_decided() -> None:
    for status in range(200, 600):
        outcome = classify(status)
        if 400 <= status < 500 and status not in (401, 403, 408, 410, 429, 460):
            assert outcome is Outcome.REJECTED, status
        if 500 <= status < 600 and status not in (501, 505):
            assert outcome is Outcome.RETRY, status


def test_network_error_is_retried() -> None:
    assert classify(None) is Outcome.RETRY


@pytest.mark.parametrize("status", [0, 100, 101, 199, 600, 999])
def test_a_status_that_is_no_final_answer_counts_as_a_transport_failure(status: int) -> None:
    assert classify(status) is Outcome.RETRY


def test_retryable_property() -> None:
    assert {o for o in Outcome if o.retryable} == {Outcome.RETRY, Outcome.RATE_LIMITED}


# -- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("300", 300.0),
        ("301", MAX_RETRY_AFTER),
        ("86400", MAX_RETRY_AFTER),
        ("9" * 5000, MAX_RETRY_AFTER),
        ("1.5", 2.0),  # tolerated, rounded up: never come back early
        ("0.001", 1.0),
    ],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "0", "0.0", "-1", "-30", "abc", "nan", "inf", "1e3", "1_0", "+5", "1.", ".5"],
)
def test_retry_after_nothing_to_wait_for(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_http_date() -> None:
    assert parse_retry_after(formatdate(NOW + 120, usegmt=True), NOW) == 120.0
    assert parse_retry_after(formatdate(NOW + 30.4, usegmt=True), NOW + 0.4) == 30.0


def test_retry_after_http_date_is_rounded_up() -> None:
    # The date has second resolution; 29.6 s left means wait 30, not 29.
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), NOW + 0.4) == 30.0


def test_retry_after_http_date_is_capped() -> None:
    assert parse_retry_after(formatdate(NOW + 3600, usegmt=True), NOW) == MAX_RETRY_AFTER


@pytest.mark.parametrize("offset", [0, -1, -3600])
def test_retry_after_http_date_now_or_past_means_no_wait(offset: float) -> None:
    assert parse_retry_after(formatdate(NOW + offset, usegmt=True), NOW) is None


def test_retry_after_naive_http_date_is_utc_not_local_time() -> None:
    # "-0000" makes parsedate_to_datetime return a naive datetime.
    aware = formatdate(NOW + 60, usegmt=True)
    naive = aware.replace("GMT", "-0000")
    assert parse_retry_after(naive, NOW) == parse_retry_after(aware, NOW) == 60.0


def test_a_repeated_retry_after_is_obeyed_at_its_longest() -> None:
    """Found by a review: a header sent twice reaches us joined (``30, 30``), neither a
    number nor a date, and was ignored: the tenant retried after its 0.5 s backoff,
    spending an attempt, inside the 30 s the server asked for."""
    assert parse_retry_after("30, 30", NOW) == 30.0
    assert parse_retry_after("5,30", NOW) == 30.0
    assert parse_retry_after("30, soon", NOW) == 30.0  # what can be read of it
    late = formatdate(NOW + 120, usegmt=True)  # a date has a comma of its own
    assert parse_retry_after(f"{late}, {formatdate(NOW + 60, usegmt=True)}", NOW) == 120.0
    assert parse_retry_after(f"10, {late}", NOW) == 120.0
    assert parse_retry_after("0, 0", NOW) is None
    assert parse_retry_after(", ,", NOW) is None


def test_retry_after_with_a_zone_offset() -> None:
    # 10:00:00 +0200 is 08:00:00 UTC.
    assert parse_retry_after("Tue, 14 Nov 2023 10:00:00 +0200", 1699948800.0 - 45) == 45.0


def test_server_wait_is_retry_after_on_a_retryable_answer() -> None:
    assert server_wait(Outcome.RATE_LIMITED, 5.0) == 5.0
    assert server_wait(Outcome.RETRY, 5.0) == 5.0  # e.g. a 503 with Retry-After
    assert server_wait(Outcome.RATE_LIMITED, None) is None  # counted backoff instead
    assert server_wait(Outcome.REJECTED, 5.0) is None
    assert server_wait(Outcome.DELIVERED, 5.0) is None


# -- X-RateLimit-Reset ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),  # Segment: seconds to wait, like Retry-After
        (" 45 ", 45.0),
        ("2.5", 3.0),
        ("999999999", MAX_RETRY_AFTER),  # just under 10**9: still a delay, capped
        (str(int(NOW) + 60), 60.0),  # a Unix time in seconds
        (f"{NOW + 29.5:.1f}", 30.0),
        (str(int(NOW * 1000) + 12_000), 12.0),  # a Unix time in milliseconds
        (str(int(NOW) + 86_400), MAX_RETRY_AFTER),
        ("9" * 5000, MAX_RETRY_AFTER),
        (formatdate(NOW + 120, usegmt=True), 120.0),  # an HTTP date
    ],
)
def test_rate_limit_reset(value: str, expected: float) -> None:
    assert parse_rate_limit_reset(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0",
        "-5",
        "soon",
        "nan",
        "1e3",
        str(int(NOW)),  # now: nothing to wait for
        str(int(NOW) - 30),  # past
        str(int(NOW * 1000) - 1),
        formatdate(NOW - 60, usegmt=True),
    ],
)
def test_rate_limit_reset_nothing_to_wait_for(value: str | None) -> None:
    assert parse_rate_limit_reset(value, NOW) is None


def test_server_wait_takes_x_rate_limit_reset_on_a_429_only() -> None:
    assert server_wait(Outcome.RATE_LIMITED, None, 7.0) == 7.0
    # Elsewhere such headers describe a quota window, not a wait.
    assert server_wait(Outcome.RETRY, None, 7.0) is None
    assert server_wait(Outcome.DELIVERED, None, 7.0) is None
    assert server_wait(Outcome.REJECTED, 3.0, 7.0) is None


def test_server_wait_takes_the_later_of_both_headers() -> None:
    assert server_wait(Outcome.RATE_LIMITED, 2.0, 9.0) == 9.0
    assert server_wait(Outcome.RATE_LIMITED, 20.0, 9.0) == 20.0
    assert server_wait(Outcome.RETRY, 20.0, 90.0) == 20.0  # a 503: Retry-After only
    assert server_wait(Outcome.RATE_LIMITED, None, None) is None


# -- RetryPolicy: a value -------------------------------------------------------------------


def test_defaults_are_the_official_clients() -> None:
    policy = RetryPolicy()
    assert attrs.asdict(policy) == {
        "initial_backoff": 0.5,
        "max_backoff": 60.0,
        "max_attempts": 10,
        "max_backoff_duration": 43200.0,
        "max_rate_limit_duration": 1800.0,
        "jitter": True,
    }


def test_policy_is_a_frozen_comparable_hashable_value() -> None:
    policy = RetryPolicy()
    assert policy == RetryPolicy()
    assert hash(policy) == hash(RetryPolicy())
    assert policy != RetryPolicy(max_attempts=3)
    assert len({policy, RetryPolicy(), RetryPolicy(jitter=False)}) == 2
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(policy)) == policy


def test_evolve_returns_a_validated_copy() -> None:
    policy = RetryPolicy()
    shorter = policy.evolve(max_attempts=3)
    assert shorter.max_attempts == 3
    assert policy.max_attempts == 10
    assert shorter == attrs.evolve(policy, max_attempts=3)
    with pytest.raises(ConfigurationError) as info:
        policy.evolve(max_attempts=0)
    assert info.value.setting == "max_attempts"


def test_evolve_rebuilds_the_wait_strategy() -> None:
    policy = RetryPolicy(jitter=False).evolve(initial_backoff=2.0)
    assert policy.next_delay(1) == 2.0
    assert policy.next_delay(2) == 4.0


def test_none_never_retries_nor_waits() -> None:
    policy = RetryPolicy.none()
    assert policy.should_give_up(1, 0.0, 0.0) == "retry budget exhausted after 1 attempt"
    assert policy.should_give_up(0, 0.0, 1.0) == "rate limited for more than 0 s"


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"initial_backoff": 0}, "initial_backoff"),
        ({"initial_backoff": -1.0}, "initial_backoff"),
        ({"initial_backoff": float("nan")}, "initial_backoff"),
        ({"initial_backoff": float("inf")}, "initial_backoff"),
        ({"initial_backoff": "0.5"}, "initial_backoff"),
        ({"initial_backoff": True}, "initial_backoff"),
        ({"max_backoff": 0.1}, "max_backoff"),  # below initial_backoff
        ({"max_backoff": 0}, "max_backoff"),
        ({"max_backoff": float("inf")}, "max_backoff"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_backoff_duration": -1}, "max_backoff_duration"),
        ({"max_backoff_duration": float("nan")}, "max_backoff_duration"),
        ({"max_rate_limit_duration": -0.5}, "max_rate_limit_duration"),
        ({"max_rate_limit_duration": None}, "max_rate_limit_duration"),
        ({"jitter": 1}, "jitter"),
        ({"jitter": "yes"}, "jitter"),
    ],
)
def test_validation_names_the_field(changes: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**changes)  # type: ignore[arg-type]
    assert info.value.setting == setting
    assert str(info.value).startswith(f"{setting}: ")


def test_valid_edge_values() -> None:
    RetryPolicy(initial_backoff=1, max_backoff=1, max_attempts=1)
    RetryPolicy(max_backoff_duration=0, max_rate_limit_duration=0)


# -- next_delay -----------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_to_a_60_second_cap() -> None:
    policy = RetryPolicy(jitter=False)
    delays = [policy.next_delay(n) for n in range(1, 12)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]


def test_backoff_never_overflows() -> None:
    assert RetryPolicy(jitter=False).next_delay(10_000) == 60.0
    assert RetryPolicy().next_delay(10**9) <= 60.0


def test_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy()
    random.seed(1234)
    for attempt in range(1, 12):
        base = min(0.5 * 2 ** (attempt - 1), 60.0)
        samples = [policy.next_delay(attempt) for _ in range(200)]
        assert all(base <= d <= min(base * (1 + JITTER_FRACTION), 60.0) for d in samples)
        if base < 60.0:
            assert len(set(samples)) > 100  # actually jittered


def test_jitter_extremes(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy()
    monkeypatch.setattr(random, "uniform", lambda a, b: b)
    assert policy.next_delay(1) == pytest.approx(0.55)
    assert policy.next_delay(6) == pytest.approx(17.6)
    assert policy.next_delay(7) == pytest.approx(35.2)  # under the cap
    assert policy.next_delay(8) == 60.0  # capped, jitter cannot push past it
    monkeypatch.setattr(random, "uniform", lambda a, b: a)
    assert policy.next_delay(1) == 0.5


def test_next_delay_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(_seconds: float) -> None:
        raise AssertionError("next_delay must not sleep")

    monkeypatch.setattr("time.sleep", no_sleep)
    assert RetryPolicy(jitter=False).next_delay(4) == 4.0
    assert 4.0 <= RetryPolicy().next_delay(4) <= 4.4


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True])
def test_next_delay_rejects_a_bad_attempt(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().next_delay(attempt)


# -- should_give_up -------------------------------------------------------------------------


def test_keeps_trying_inside_every_budget() -> None:
    policy = RetryPolicy()
    assert policy.should_give_up(9, 43200.0, 1800.0) is None  # budgets are inclusive
    assert policy.should_give_up(1, 0.0, 0.0) is None


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy()
    assert policy.should_give_up(10, 0.0, 0.0) == "retry budget exhausted after 10 attempts"
    assert policy.should_give_up(11, 0.0, 0.0) == "retry budget exhausted after 11 attempts"
    assert RetryPolicy(max_attempts=3).should_give_up(2, 0.0, 0.0) is None
    assert RetryPolicy(max_attempts=3).should_give_up(3, 0.0, 0.0) is not None


def test_gives_up_after_too_much_backoff() -> None:
    policy = RetryPolicy(max_attempts=1000)
    assert policy.should_give_up(5, 43200.5, 0.0) == "backed off for more than 43200 s"
    assert RetryPolicy(max_backoff_duration=90).should_give_up(1, 90.5, 0) == (
        "backed off for more than 90 s"
    )


def test_gives_up_after_being_rate_limited_too_long() -> None:
    policy = RetryPolicy()
    assert policy.should_give_up(0, 0.0, 1800.5) == "rate limited for more than 1800 s"
    assert policy.should_give_up(0, 0.0, 1799.0) is None


def test_rate_limited_waits_do_not_use_the_attempt_budget() -> None:
    # Ten server-paced waits of 100 s: attempts stay at 0 and the batch lives on.
    policy = RetryPolicy()
    assert policy.should_give_up(0, 0.0, 10 * 100.0) is None


def test_a_full_default_schedule_gives_up_on_attempts_first() -> None:
    policy = RetryPolicy(jitter=False)
    attempts, spent = 0, 0.0
    reason = None
    while reason is None:
        attempts += 1
        spent += policy.next_delay(attempts)
        reason = policy.should_give_up(attempts, spent, 0.0)
    assert attempts == 10
    assert reason == "retry budget exhausted after 10 attempts"
    assert spent == pytest.approx(0.5 + 1 + 2 + 4 + 8 + 16 + 32 + 60 + 60 + 60)


# -- Backoff: the retry state of one tenant's queue -----------------------------------------

STEADY = RetryPolicy(initial_backoff=0.5, max_backoff=4.0, max_attempts=5, jitter=False)


def test_backoff_counts_each_failure_and_doubles_the_wait() -> None:
    backoff = Backoff(STEADY)
    delays = [backoff.record_failure(Outcome.RETRY) for _ in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert (backoff.attempts, backoff.retries, backoff.failures) == (4, 4, 4)
    assert backoff.backoff_spent == 7.5
    assert backoff.rate_limited_spent == 0.0


def test_backoff_gives_up_on_the_last_attempt_and_starts_afresh() -> None:
    backoff = Backoff(STEADY)
    for _ in range(4):
        assert not isinstance(backoff.record_failure(Outcome.RETRY), GiveUp)
    assert backoff.record_failure(Outcome.RETRY) == GiveUp(
        "retry budget exhausted after 5 attempts"
    )
    # Reset for the next batch, but the failure is still on record for requests in flight.
    assert (backoff.attempts, backoff.retries, backoff.backoff_spent) == (0, 0, 0.0)
    assert backoff.failures == 5
    assert backoff.record_failure(Outcome.RETRY) == 0.5


def test_backoff_refuses_a_wait_that_would_overrun_its_budget_up_front() -> None:
    backoff = Backoff(STEADY.evolve(max_attempts=100, max_backoff_duration=3.0))
    assert backoff.record_failure(Outcome.RETRY) == 0.5
    assert backoff.record_failure(Outcome.RETRY) == 1.0
    assert backoff.record_failure(Outcome.RETRY) == GiveUp("backed off for more than 3 s")


def test_backoff_server_paced_waits_are_not_attempts_and_have_their_own_budget() -> None:
    backoff = Backoff(STEADY.evolve(max_rate_limit_duration=100.0))
    assert backoff.record_failure(Outcome.RATE_LIMITED, 30.0) == 30.0
    assert backoff.record_failure(Outcome.RETRY, 20.0) == 20.0  # a 503 with Retry-After
    assert backoff.record_failure(Outcome.RATE_LIMITED, 10.0, 40.0) == 40.0  # the later wins
    assert (backoff.attempts, backoff.retries, backoff.rate_limited_spent) == (0, 3, 90.0)
    assert backoff.backoff_spent == 0.0
    assert backoff.record_failure(Outcome.RATE_LIMITED, 20.0) == GiveUp(
        "rate limited for more than 100 s"
    )


def test_backoff_a_429_without_a_wait_takes_a_counted_backoff() -> None:
    backoff = Backoff(STEADY)
    assert backoff.record_failure(Outcome.RATE_LIMITED) == 0.5
    assert backoff.record_failure(Outcome.RETRY, None, 30.0) == 1.0  # a reset only on a 429
    assert (backoff.attempts, backoff.rate_limited_spent) == (2, 0.0)


def test_backoff_a_failure_beside_one_already_recorded_is_not_counted_again() -> None:
    backoff = Backoff(STEADY)
    first = second = backoff.failures  # both requests sent before either failed
    assert backoff.record_failure(Outcome.RETRY, seen=first) == 0.5
    assert backoff.record_failure(Outcome.RETRY, seen=second) == 0.0  # follows the first
    assert (backoff.attempts, backoff.retries, backoff.failures) == (1, 1, 1)
    assert backoff.record_failure(Outcome.RETRY, seen=backoff.failures) == 1.0


def test_backoff_success_resets_unless_a_request_beside_it_failed_meanwhile() -> None:
    backoff = Backoff(STEADY)
    seen = backoff.failures  # a request sent ...
    backoff.record_failure(Outcome.RETRY)  # ... while another one failed
    backoff.record_success(seen)
    assert (backoff.attempts, backoff.retries, backoff.backoff_spent) == (1, 1, 0.5)
    backoff.record_success(backoff.failures)
    assert (backoff.attempts, backoff.retries, backoff.backoff_spent) == (0, 0, 0.0)
    backoff.record_failure(Outcome.RATE_LIMITED, 5.0)
    backoff.record_success()  # no mark: always resets
    assert (backoff.retries, backoff.rate_limited_spent, backoff.failures) == (0, 0.0, 2)


def test_backoff_another_batchs_success_clears_a_429s_wait_but_no_budget_of_the_batch() -> None:
    """``aside``: a batch set aside, delivered, speaks for the key (a 429's wait is over)
    but not for the batch this backoff retries: its counted attempts stand, and so do the
    waits a server named for that batch's own requests (a 503 with ``Retry-After``)."""
    backoff = Backoff(STEADY)
    backoff.record_failure(Outcome.RATE_LIMITED, 1.0)
    backoff.record_success(backoff.failures, aside=True)
    assert (backoff.retries, backoff.rate_limited_spent) == (0, 0.0)
    backoff.record_failure(Outcome.RETRY)  # no server wait: a counted attempt
    backoff.record_failure(Outcome.RATE_LIMITED, 1.0)
    backoff.record_success(backoff.failures, aside=True)
    assert (backoff.attempts, backoff.retries, backoff.rate_limited_spent) == (1, 2, 1.0)
    backoff.reset()
    backoff.record_failure(Outcome.RETRY, 2.0)  # a 503's own Retry-After
    backoff.record_success(backoff.failures, aside=True)
    assert (backoff.own_waits, backoff.retries, backoff.rate_limited_spent) == (1, 1, 2.0)
    backoff.record_success(backoff.failures)  # the batch itself: everything is reset
    assert (backoff.own_waits, backoff.retries, backoff.rate_limited_spent) == (0, 0, 0.0)


def test_backoff_reset_keeps_the_failure_count() -> None:
    backoff = Backoff(STEADY, attempts=3, retries=4, failures=7, backoff_spent=2.0)
    backoff.rate_limited_spent = 9.0
    backoff.reset()
    assert backoff == Backoff(STEADY, failures=7)


def test_backoff_with_jitter_stays_within_the_policys_bounds() -> None:
    random.seed(11)
    backoff = Backoff(RetryPolicy(initial_backoff=1.0, max_backoff=3.0, max_attempts=50))
    delays = [backoff.record_failure(Outcome.RETRY) for _ in range(6)]
    first, second, *capped = [d for d in delays if isinstance(d, float)]
    assert 1.0 <= first <= 1.0 + JITTER_FRACTION
    assert 2.0 <= second <= 2.0 * (1 + JITTER_FRACTION)
    assert capped == [3.0] * 4  # 4 s and more, capped: jitter never passes the cap
    assert backoff.backoff_spent == pytest.approx(first + second + 12.0)
