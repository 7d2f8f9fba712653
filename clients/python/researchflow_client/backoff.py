"""Reconnect delays: exponential backoff with full jitter, capped.

    delay(n) = uniform(0, min(cap, initial * 2**n))      n = 0 for the first retry

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads clients that
lost the same server over the whole window, so a restarted server is not hit by all of them
in lock-step; the cap keeps a long outage from growing the wait without bound.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5  # seconds: the window of the first retry
    cap: float = 30.0  # seconds: no window grows past this

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0:
            raise ValueError("backoff delays must be >= 0 seconds")

    def window(self, retry: int) -> float:
        """The upper bound of the delay before retry number `retry` (0-based)."""
        if retry < 0:
            raise ValueError("retry must be >= 0")
        # 2**retry overflows a float past ~1024 retries; the cap is reached long before.
        return min(self.cap, self.initial * 2.0 ** min(retry, 64))

    def delay(self, retry: int, random: Callable[[], float] = random.random) -> float:
        return self.window(retry) * random()
