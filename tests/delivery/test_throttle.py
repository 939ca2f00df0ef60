"""The token bucket behind `rateLimit`, driven by plain clock values."""

from __future__ import annotations

import pytest

from wahookd.delivery.throttle import TokenBucket


def test_a_full_bucket_allows_a_burst_of_rate_then_waits() -> None:
    bucket = TokenBucket(5)
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(100.0) == pytest.approx(0.2)
    # the refusal took nothing: after the wait one token is there
    assert bucket.take(100.2) == 0.0
    assert bucket.take(100.2) == pytest.approx(0.2)


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(2)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.available(0.25) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.available(60.0) == 2.0  # never more than the burst


def test_a_steady_stream_gets_exactly_the_rate() -> None:
    bucket = TokenBucket(10)
    now, sent = 0.0, 0
    while now <= 10.0 + 1e-6:
        wait = bucket.take(now)
        if wait == 0.0:
            sent += 1
        else:
            now += wait
    assert sent == 10 + 10 * 10  # the first burst at 0, then ten a second until 10 s


def test_one_per_second() -> None:
    bucket = TokenBucket(1)
    assert bucket.take(5.0) == 0.0
    assert bucket.take(5.5) == pytest.approx(0.5)
    assert bucket.take(6.0) == 0.0


def test_a_clock_going_back_gives_nothing_extra() -> None:
    bucket = TokenBucket(1)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(9.0) == pytest.approx(1.0)
    assert bucket.take(11.0) == 0.0


def test_the_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0)
