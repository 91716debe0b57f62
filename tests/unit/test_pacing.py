"""Pacing on fake time: RTT-based timeouts and token buckets."""

from __future__ import annotations

import pytest

from portolan.engine import pacing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timeout_starts_at_the_initial_value_before_any_sample() -> None:
    estimator = pacing.RttEstimator(initial=0.5, minimum=0.1, maximum=1.25)
    assert estimator.timeout() == 0.5


def test_timeout_follows_srtt_plus_four_rttvar_within_bounds() -> None:
    estimator = pacing.RttEstimator(initial=0.5, minimum=0.001, maximum=10.0)
    estimator.observe(0.2)  # srtt 0.2, rttvar 0.1
    assert estimator.timeout() == pytest.approx(0.2 + 4 * 0.1)
    estimator.observe(0.4)  # rttvar 0.75*0.1 + 0.25*0.2, srtt 0.875*0.2 + 0.125*0.4
    assert estimator.timeout() == pytest.approx(0.225 + 4 * 0.125)


def test_timeout_is_clamped_to_the_minimum_on_fast_links_and_the_maximum_on_slow_ones() -> None:
    fast = pacing.RttEstimator(initial=0.5, minimum=0.1, maximum=1.25)
    fast.observe(0.0001)
    assert fast.timeout() == 0.1
    slow = pacing.RttEstimator(initial=0.5, minimum=0.1, maximum=1.25)
    slow.observe(3.0)
    assert slow.timeout() == 1.25


def test_token_bucket_allows_its_burst_then_waits_for_refill() -> None:
    clock = FakeClock()
    bucket = pacing.TokenBucket(10, clock, burst=2)
    assert bucket.take() and bucket.take()
    assert not bucket.take()
    assert bucket.wait_time() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take()


def test_a_bucket_that_starts_empty_waits_one_interval_first() -> None:
    clock = FakeClock()
    bucket = pacing.TokenBucket(1, clock, start_empty=True)
    assert not bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.take()


def test_an_empty_bucket_asks_to_sleep_until_a_whole_burst_is_back_not_one_token() -> None:
    clock = FakeClock()
    bucket = pacing.TokenBucket(1000, clock)  # burst: 10 tokens (10 ms worth)
    while bucket.take():
        pass
    assert bucket.wait_time() == pytest.approx(0.001)
    assert bucket.batch_wait() == pytest.approx(0.010)
    clock.now += bucket.batch_wait()
    assert sum(bucket.take() for _ in range(20)) == 10
