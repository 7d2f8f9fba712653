"""The inbound token bucket (events/gateway/ratelimit.py), on a fake clock: plain numbers."""

from __future__ import annotations

from events.gateway.ratelimit import TokenBucket


def test_it_allows_a_full_burst_at_once() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_it_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 of a token
    assert bucket.take(0.5)  # 1.0: 0.8 + 0.2
    assert not bucket.take(0.5)


def test_it_never_holds_more_than_a_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    # An hour idle refills to the burst, not to 36,000 tokens.
    assert [bucket.take(3600.0) for _ in range(3)] == [True, True, False]


def test_it_counts_rejections_in_a_row_until_one_passes() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert not bucket.take(0.0) and not bucket.exhausted
    assert not bucket.take(0.0) and bucket.exhausted  # `burst` rejections in a row
    assert bucket.take(1.0)
    assert bucket.rejected_in_a_row == 0 and not bucket.exhausted
