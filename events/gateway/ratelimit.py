"""The inbound rate limit of one socket: a token bucket, pure (the caller passes the time).

`rate` tokens a second refill the bucket up to `burst`; each client message takes one. A
message finding the bucket empty is rejected; `burst` rejections in a row mean the client
ignores the errors it is sent, and the socket should close (WS_RATE_LIMIT, WS_RATE_BURST).
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_at", "_tokens", "burst", "rate", "rejected_in_a_row")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)  # a new socket may send a full burst at once
        self._at = now
        self.rejected_in_a_row = 0

    def take(self, now: float) -> bool:
        """One message at `now` (a monotonic clock): True if it may be handled."""
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.rejected_in_a_row = 0
            return True
        self.rejected_in_a_row += 1
        return False

    @property
    def exhausted(self) -> bool:
        """The client went on sending through `burst` rejections in a row."""
        return self.rejected_in_a_row >= self.burst
