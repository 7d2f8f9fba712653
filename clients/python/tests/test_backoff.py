"""Reconnect delays: exponential windows, full jitter, a cap."""

from __future__ import annotations

import pytest

from researchflow_client import Backoff


def test_it_doubles_the_window_until_the_cap() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    assert [backoff.window(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_it_draws_each_delay_from_the_whole_window() -> None:
    backoff = Backoff(initial=1.0, cap=30.0)
    assert backoff.delay(3, random=lambda: 0.0) == 0.0
    assert backoff.delay(3, random=lambda: 0.5) == 4.0
    assert backoff.delay(3, random=lambda: 0.999) == pytest.approx(7.992)


def test_it_spreads_clients_that_retry_together() -> None:
    backoff = Backoff(initial=1.0, cap=30.0)
    delays = {round(backoff.delay(4), 3) for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 16 for d in delays)


def test_a_huge_retry_count_stays_at_the_cap() -> None:
    assert Backoff(initial=0.5, cap=30.0).window(10_000) == 30.0


def test_it_refuses_negative_delays() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Backoff(initial=-1.0)
