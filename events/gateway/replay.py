"""Resume: a socket that says the last event id it saw gets the events after it from the log,
then the live events that arrived meanwhile, with no gap and no duplicate.

While a replay reads the log, live events for the socket are held (`_held` is a list), then
offered again once the replayed ones are queued; the writer drops any id it already sent, so
an event both in the log read and held goes out once. A client too far behind (past the
pruned log, or more than WS_RESUME_MAX_EVENTS) is told to resync instead.

`Replay` is a base class of the consumer, holding no state of its own: `_held` lives in the
consumer's `__slots__` (`REPLAY_SLOTS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from events import log, metrics
from events.record import LoggedEvent

from .writer import control_frame

REPLAY_SLOTS = ("_held",)  # Replay's attributes, for the host's __slots__


class Replay:
    if TYPE_CHECKING:  # provided by the host class
        visible_projects: frozenset[str] | None
        scope_run: str | None
        _types: frozenset[str]

        def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None: ...
        def _enqueue(self, event: LoggedEvent, *, replayed: bool = False) -> None: ...
        def _push(self, frame: str) -> None: ...

    def _start_replay(self) -> None:
        self._held: list[LoggedEvent] | None = None  # a list while a replay runs

    async def _replay(self, after: int) -> None:
        """Log events > after, then whatever arrived live meanwhile: no gap, no duplicate.
        The caller set `_held` to a list before the socket could be offered live events it
        would replay."""
        try:
            pruned = await database_sync_to_async(log.pruned_through)()
            limit = settings.WS_RESUME_MAX_EVENTS
            if after < pruned:
                self._resync(after, pruned + 1)
                return
            events = (
                await database_sync_to_async(log.visible_after)(
                    after,
                    projects=self.visible_projects,
                    run_id=self.scope_run,
                    types=self._types,
                    limit=limit + 1,
                )
                if self._types and self.visible_projects != frozenset()
                else []
            )
            if len(events) > limit:
                self._resync(after, pruned + 1)
                return
            for event in events:
                self._enqueue(event, replayed=True)
            metrics.RESUME_REPLAYED.inc(len(events))
        finally:
            held, self._held = self._held or [], None
            for event in held:
                self.offer(event)

    def _resync(self, after: int, oldest: int) -> None:
        metrics.RESYNC_REQUIRED.inc()
        self._push(
            control_frame("resync.required", {"lastEventId": after, "oldestEventId": oldest})
        )
