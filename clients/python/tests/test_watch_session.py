"""The watcher's session against a scripted stream (no server): when it stops, its resync
policy, and that closing the stream never hangs its exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Any

import pytest
from test_watch_model import RUN, Events

from researchflow_client.errors import ResyncRequired
from researchflow_client.events import Event
from researchflow_client.watch import session
from researchflow_client.watch.exit_codes import ExitCode
from researchflow_client.watch.session import Target, follow
from researchflow_client.watch.sinks import JsonLines
from researchflow_client.watch.state import WatchState

Item = Event | ResyncRequired


class Scripted:
    """Stands in for RunEvents: yields `script` (raising the ResyncRequired items), then
    waits for ever. Its aclose() waits for a reader task that swallows the first cancellation
    (as a reader built on Python 3.11's asyncio.wait_for could: CPython gh-86296), so closing
    it hangs until a second cancellation."""

    opened: list[int | None]

    def __init__(self, script: list[Item], opened: list[int | None], **options: Any) -> None:
        self.script = list(script)
        self.last_event_id: int | None = None
        opened.append(options["last_event_id"])
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scripted:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)  # the swallowed cancellation
        await asyncio.sleep(3600)  # reads on; only a second cancellation ends it

    async def __anext__(self) -> Event:
        if not self.script:
            await asyncio.sleep(3600)
        item = self.script.pop(0)
        if isinstance(item, ResyncRequired):
            raise item
        self.last_event_id = item.id
        return item

    async def aclose(self) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def run_session(
    scripts: list[list[Item]], *, run_id: str | None = RUN, from_start: bool = True
) -> tuple[ExitCode, list[int | None], list[int], str]:
    opened: list[int | None] = []
    pending = list(scripts)

    def opener(url: str, **options: Any) -> Scripted:
        return Scripted(pending.pop(0), opened, **options)

    out, err = io.StringIO(), io.StringIO()
    target = Target("ws://test/ws", "t", run_id=run_id, from_start=from_start)

    async def scenario() -> ExitCode:
        return await follow(target, WatchState(), JsonLines(out, err), opener=opener)  # type: ignore[arg-type]

    started = time.monotonic()
    code = asyncio.run(asyncio.wait_for(scenario(), 10))
    # The stream's close is bounded (CLOSE_WAIT, 0.2 s here): a hung close would take the
    # whole 10 s (and then end only because wait_for's cancellation reaches the reader).
    assert time.monotonic() - started < 5, "closing the stream hung the session"
    ids = [int(line.split(",")[0].removeprefix('{"id":')) for line in out.getvalue().splitlines()]
    return code, opened, ids, err.getvalue()


@pytest.fixture(autouse=True)
def _short_close_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "CLOSE_WAIT", 0.2)


def test_it_stops_at_the_runs_outcome_even_when_closing_the_stream_hangs() -> None:
    events = Events().whole_run()
    code, opened, ids, err = run_session([[*events, *Events(RUN).whole_run()]])
    assert code == ExitCode.COMPLETED
    assert ids == [event.id for event in events]  # nothing after the outcome
    assert opened == [0]  # --run: from the start of the log
    assert err == ""


def test_it_exits_1_at_a_failed_outcome() -> None:
    code, _, _, _ = run_session([Events().whole_run("failed")])
    assert code == ExitCode.FAILED


def test_live_only_it_opens_the_stream_without_a_cursor() -> None:
    code, opened, _, _ = run_session([Events().whole_run()], from_start=False)
    assert (code, opened) == (ExitCode.COMPLETED, [None])


def test_on_a_pruned_log_it_follows_on_from_the_oldest_event_the_log_holds() -> None:
    make = Events()
    make.next_id = 50
    events = make.whole_run()
    code, opened, ids, err = run_session([[ResyncRequired(0, 50)], events])
    assert code == ExitCode.COMPLETED
    assert opened == [0, 49]
    assert ids == [event.id for event in events]
    assert err == (
        "researchflow watch: the server's log no longer holds events #1–#49 (pruned): "
        "showing what it holds, from #50 on; what happened before is missing\n"
    )


def test_when_the_history_is_too_long_to_replay_it_goes_on_live_on_the_same_stream() -> None:
    events = Events().whole_run()
    # The log starts at #1 (nothing pruned) but the server would not replay it all.
    code, opened, ids, err = run_session([[ResyncRequired(0, 1), *events[5:]]])
    assert code == ExitCode.COMPLETED
    assert opened == [0]
    assert ids == [event.id for event in events[5:]]
    assert "following live events only" in err


def test_it_tries_the_oldest_event_only_once_so_a_second_resync_cannot_loop() -> None:
    make = Events()
    make.next_id = 50
    events = make.whole_run()
    scripts: list[list[Item]] = [[ResyncRequired(0, 50)], [ResyncRequired(49, 60), *events]]
    code, opened, _, err = run_session(scripts)
    assert code == ExitCode.COMPLETED
    assert opened == [0, 49]
    assert err.count("\n") == 2 and "following live events only" in err.splitlines()[1]
