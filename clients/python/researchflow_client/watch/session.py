"""Follow the stream into the state and the sink, and decide when to stop.

- `--run`: the cursor starts at 0 by default, so the server replays the run's whole logged
  history first: a watcher started mid-run, or after the run ended, shows the whole picture
  and, for an ended run, exits at once with its outcome. It stops at the run's outcome.
- `--project`: follows every run of the project until interrupted (live only by default:
  a project's history is every run it ever had).
- `resync.required` (the server cannot replay what was asked: its log was pruned, or the
  history is longer than it replays at once, WS_RESUME_MAX_EVENTS) never stops the watcher,
  and the socket stays subscribed: the live events after the resync follow on it, with no
  gap. With `--run` the watcher loads the run's current state over the REST API
  (`load_run`), folds it into the state, says so once per resync, and exits at once if the
  run has ended; else it goes on with the live events. The REST call is retried like the
  socket (`max_retries`, the backoff) when the server is unavailable; a refused token or run
  ends the watcher as a refused socket does (exit 3). With `--project` there is no one
  snapshot to load (a project's history is every run it ever had): it says so once and goes
  on with the live events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backoff import Backoff
from ..client import RunEvents
from ..errors import ResyncRequired, ServerUnavailable
from ..snapshot import RunSnapshot, load_run
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


SnapshotLoader = Callable[..., RunSnapshot]
RESYNCED = "the server could not replay the history: loaded the run's current state over REST"
RESYNCED_LIVE = (
    "the server could not replay the history: following live events only; "
    "what happened before is missing"
)


async def follow(
    target: Target,
    state: WatchState,
    sink: Sink,
    *,
    opener: Opener = RunEvents,
    loader: SnapshotLoader = load_run,
    tick_interval: float = 0.1,
) -> ExitCode:
    """Follow until the run's outcome (`--run`) or for ever (`--project`). Raises the client's
    errors (AuthFailed, AccessRevoked, ServerUnavailable, ...) for the caller to map."""
    events = opener(
        target.url,
        token=target.token,
        run_id=target.run_id,
        project_id=target.project_id,
        last_event_id=0 if target.from_start else None,
        **dict(target.client_options),
    )
    await events.__aenter__()  # raises AuthFailed, ServerUnavailable, ... (and cleans up)
    sink.start()  # after the first auth: a refused token shows no empty view
    ticker = asyncio.create_task(_tick(sink, tick_interval))
    try:
        return await _stream(events, target, state, sink, loader)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await _close(events)


async def _stream(
    events: RunEvents,
    target: Target,
    state: WatchState,
    sink: Sink,
    loader: SnapshotLoader,
) -> ExitCode:
    warned_live = False
    while True:
        try:
            event = await anext(events)
        except ResyncRequired:
            if target.run_id is None:
                if not warned_live:
                    warned_live = True
                    sink.warn(RESYNCED_LIVE)
                continue
            run = state.apply_snapshot(await _load(target, loader))
            sink.warn(RESYNCED)  # also redraws the view from the new state
        except StopAsyncIteration:
            return ExitCode.INTERRUPTED  # closed under us: only on shutdown
        else:
            notes = state.apply(event)
            sink.event(event, notes)
            if target.run_id is None:
                continue
            found = state.run(target.run_id)
            if found is None:
                continue
            run = found
        if run.finished:
            return ExitCode.COMPLETED if run.status == "completed" else ExitCode.FAILED


async def _load(target: Target, loader: SnapshotLoader) -> RunSnapshot:
    """The run over REST, with the socket's URL, token and SSL context; a server that is
    unavailable is retried as the socket would be."""
    assert target.run_id is not None
    options = dict(target.client_options)
    retries = options.get("max_retries", 10)
    backoff = Backoff(options.get("backoff_initial", 0.5), options.get("backoff_max", 30.0))
    failures = 0
    while True:
        try:
            return await asyncio.to_thread(
                loader,
                target.url,
                token=target.token,
                run_id=target.run_id,
                ssl=options.get("ssl"),
                timeout=options.get("open_timeout", 10.0),
            )
        except ServerUnavailable as exc:
            failures += 1
            if retries is not None and failures > retries:
                raise ServerUnavailable(exc.url, failures, exc.cause) from None
            await asyncio.sleep(backoff.delay(failures - 1))


async def _close(events: RunEvents) -> None:
    # On the timeout, cancelling aclose() also cancels the task it waits for (the reader).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(events.aclose(), CLOSE_WAIT)


async def _tick(sink: Sink, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        sink.tick()
