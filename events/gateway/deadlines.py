"""The deadlines of one socket: authenticate in time, and never go silent for too long.

One timer per socket, due at the next deadline (WS_AUTH_TIMEOUT from the connect while the
socket is unauthenticated; WS_HEARTBEAT_TIMEOUT after the last client message). It is
re-armed only when it fires, so an idle socket costs one wake-up per timeout period, not one
per message or per second.

`Deadlines` is a base class of the consumer, holding no state of its own: its three
attributes live in the consumer's `__slots__` (`DEADLINES_SLOTS`; a separate object would
cost memory per socket for two timestamps).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

CLOSE_GOING_AWAY = 1001  # silent past the heartbeat timeout: the client should reconnect
CLOSE_UNAUTHENTICATED = 4401


# Deadlines' attributes, for the host's __slots__: when the socket connected, when the client
# last sent a message, and the timer due at the next deadline.
DEADLINES_SLOTS = ("_connected_at", "_last_inbound", "_timer")


class Deadlines:
    if TYPE_CHECKING:  # provided by the host class
        user: Any
        _closing: bool

        def _close_soon(self, code: int) -> None: ...

    def _start_deadlines(self) -> None:
        self._last_inbound = time.monotonic()
        self._connected_at = self._last_inbound
        self._timer: asyncio.TimerHandle | None = None  # armed once the socket is accepted

    def _heard_from_client(self) -> None:
        self._last_inbound = time.monotonic()

    def _stop_deadlines(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _arm_timer(self) -> None:
        deadline = self._last_inbound + settings.WS_HEARTBEAT_TIMEOUT
        if self.user is None:
            deadline = min(deadline, self._connected_at + settings.WS_AUTH_TIMEOUT)
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._deadline_due)

    def _deadline_due(self) -> None:
        if self._closing:
            return
        now = time.monotonic()
        if self.user is None and now - self._connected_at >= settings.WS_AUTH_TIMEOUT:
            self._close_soon(CLOSE_UNAUTHENTICATED)
            return
        if now - self._last_inbound >= settings.WS_HEARTBEAT_TIMEOUT:
            self._close_soon(CLOSE_GOING_AWAY)
            return
        self._arm_timer()
