"""Follow the stream into the state and the sink, and decide when to stop.

- `--run`: the cursor starts at 0 by default, so the server replays the run's whole logged
  history first: a watcher started mid-run, or after the run ended, shows the whole picture
  and, for an ended run, exits at once with its outcome. It stops at the run's outcome.
- `--project`: follows every run of the project until interrupted (live only by default:
  a project's history is every run it ever had).
- `resync.required` (the server cannot replay what was asked: its log was pruned, or the
  history is longer than it replays at once) never stops the watcher. It says so on the
  sink, then: when the log still holds a later part of the history, it follows on from the
  oldest event the log holds (a pruned log: what is left still shows the run, and its
  outcome if that is logged); otherwise it goes on with the live events the server sends
  after the resync on the same socket. It tries the first only once, so it cannot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client import RunEvents
from ..errors import ResyncRequired
from .exit_codes import ExitCode
from .sinks import Sink
from .state import WatchState


@dataclass(frozen=True)
class Target:
    url: str
    token: str = ""  # never printed: the dataclass's repr leaves it out (see __repr__)
    run_id: str | None = None
    project_id: str | None = None
    from_start: bool = True
    client_options: tuple[tuple[str, Any], ...] = ()  # RunEvents keywords (retries, backoff)

    def __repr__(self) -> str:
        scope = f"run_id={self.run_id!r}" if self.run_id else f"project_id={self.project_id!r}"
        return f"Target({self.url!r}, {scope}, from_start={self.from_start})"


Opener = Callable[..., RunEvents]
# How long closing the stream may take before the watcher exits anyway. A close includes the
# WebSocket closing handshake (the client gives it 2 s); whatever happens in it (a server that
# never answers, a reader task that missed its cancellation), a script waiting on the
# watcher's exit code must get it.
CLOSE_WAIT = 3.0


class _Reopen(Exception):
    def __init__(self, cursor: int) -> None:
        self.cursor = cursor


async def follow(
    target: Target,
    state: WatchState,
    sink: Sink,
    *,
    opener: Opener = RunEvents,
    tick_interval: float = 0.1,
) -> ExitCode:
    """Follow until the run's outcome (`--run`) or for ever (`--project`). Raises the client's
    errors (AuthFailed, AccessRevoked, ServerUnavailable, ...) for the caller to map."""
    cursor: int | None = 0 if target.from_start else None
    policy = _ResyncPolicy(sink)
    while True:
        events = opener(
            target.url,
            token=target.token,
            run_id=target.run_id,
            project_id=target.project_id,
            last_event_id=cursor,
            **dict(target.client_options),
        )
        await events.__aenter__()  # raises AuthFailed, ServerUnavailable, ... (and cleans up)
        sink.start()  # after the first auth: a refused token shows no empty view
        ticker = asyncio.create_task(_tick(sink, tick_interval))
        try:
            return await _stream(events, cursor, target, state, sink, policy)
        except _Reopen as reopen:
            cursor = reopen.cursor
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await _close(events)


async def _stream(
    events: RunEvents,
    cursor: int | None,
    target: Target,
    state: WatchState,
    sink: Sink,
    policy: _ResyncPolicy,
) -> ExitCode:
    while True:
        try:
            event = await anext(events)
        except ResyncRequired as exc:
            seen = events.last_event_id if events.last_event_id is not None else cursor
            policy.resync(seen or 0, exc.oldest_event_id)
            continue
        except StopAsyncIteration:
            return ExitCode.INTERRUPTED  # closed under us: only on shutdown
        notes = state.apply(event)
        sink.event(event, notes)
        if target.run_id is not None:
            run = state.run(target.run_id)
            if run is not None and run.finished:
                return ExitCode.COMPLETED if run.status == "completed" else ExitCode.FAILED


class _ResyncPolicy:
    """What to do on `resync.required` (see the module's docstring): follow on from the oldest
    event the log holds, once; else go on live. Each is said once."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.tried_oldest = False
        self.warned_live = False

    def resync(self, seen: int, oldest: int | None) -> None:
        """Raises _Reopen to follow on from the log's oldest event; returns to go on live."""
        if not self.tried_oldest and oldest is not None and oldest - 1 > seen:
            self.tried_oldest = True
            self.sink.warn(
                f"the server's log no longer holds events #{seen + 1}–#{oldest - 1} (pruned): "
                f"showing what it holds, from #{oldest} on; what happened before is missing"
            )
            raise _Reopen(oldest - 1)
        if not self.warned_live:
            self.warned_live = True
            self.sink.warn(
                "the server cannot replay this history (too long, or pruned): "
                "following live events only; what happened before is missing"
            )


async def _close(events: RunEvents) -> None:
    # On the timeout, cancelling aclose() also cancels the task it waits for (the reader).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(events.aclose(), CLOSE_WAIT)


async def _tick(sink: Sink, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        sink.tick()
