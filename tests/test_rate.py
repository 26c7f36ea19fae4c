"""The request-rate cap on plain values: token buckets by key fingerprint, taken, refunded,
refilled, and when a short bucket is ready again (no clock, no thread)."""

from __future__ import annotations

import math

import pytest

from selligent_segment.delivery._rate import TOKEN_SLACK, Bucket, RateLimits


def test_burst_is_a_tenth_of_a_seconds_worth_and_at_least_one() -> None:
    assert RateLimits(100.0).burst == 10.0
    assert RateLimits(5.0).burst == 1.0
    assert RateLimits(0.0).burst == 1.0


def test_a_new_bucket_is_full_and_one_per_fingerprint() -> None:
    limits = RateLimits(20.0)
    bucket = limits.bucket("fp-a")
    assert limits.bucket("fp-a") is bucket
    assert limits.bucket("fp-b") is not bucket
    assert set(limits.buckets) == {"fp-a", "fp-b"}
    assert limits.tokens(bucket, 0.0) == limits.burst == 2.0


def test_a_burst_is_taken_at_once_then_one_token_per_refill() -> None:
    limits = RateLimits(20.0)  # burst 2, a token every 0.05 s
    bucket = limits.bucket("fp")
    assert limits.take(bucket, 5.0)
    assert limits.take(bucket, 5.0)
    assert not limits.take(bucket, 5.0)  # the burst is spent
    assert (bucket.tokens, bucket.refilled) == (0.0, 5.0)  # a refused take changes nothing
    assert not limits.take(bucket, 5.04)
    assert limits.take(bucket, 5.05)
    assert not limits.take(bucket, 5.05)


def test_refill_is_capped_at_the_burst() -> None:
    limits = RateLimits(20.0)
    bucket = Bucket(tokens=0.0, refilled=0.0)
    assert limits.tokens(bucket, 0.025) == pytest.approx(0.5)
    assert limits.tokens(bucket, 1000.0) == 2.0


def test_a_token_short_only_by_rounding_counts_as_whole() -> None:
    limits = RateLimits(20.0)
    bucket = Bucket(tokens=1.0 - TOKEN_SLACK / 2, refilled=0.0)
    assert limits.ready_at(bucket, 0.0) == -math.inf
    assert limits.take(bucket, 0.0)
    short = Bucket(tokens=1.0 - 2 * TOKEN_SLACK, refilled=0.0)
    assert not limits.take(short, 0.0)


def test_a_short_bucket_is_ready_when_its_token_is_refilled_and_never_now() -> None:
    limits = RateLimits(20.0)
    bucket = Bucket(tokens=0.0, refilled=5.0)
    assert limits.ready_at(bucket, 5.0) == 5.05
    assert limits.ready_at(bucket, 5.01) == pytest.approx(5.05)
    # A shortfall so small that now + wait rounds to now: the next float after now.
    tiny = Bucket(tokens=1.0 - 2 * TOKEN_SLACK, refilled=1e12)
    assert 1e12 + 2 * TOKEN_SLACK / 20 == 1e12  # the wait alone would round to now
    assert limits.ready_at(tiny, 1e12) > 1e12
    assert limits.ready_at(tiny, 1e12) == math.nextafter(1e12, math.inf)


def test_a_refund_gives_the_token_back_up_to_the_burst() -> None:
    limits = RateLimits(20.0)
    bucket = limits.bucket("fp")
    assert limits.take(bucket, 0.0)
    assert limits.take(bucket, 0.0)
    limits.refund(bucket)
    assert limits.take(bucket, 0.0)  # the refunded token is taken again at once
    limits.refund(bucket)
    limits.refund(bucket)
    limits.refund(bucket)
    assert bucket.tokens == limits.burst
