"""The watcher's session against a scripted stream and a scripted REST snapshot (no server):
when it stops, what it does on `resync.required`, and that closing the stream never hangs its
exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Any

import pytest
from test_watch_model import RUN, Events
from test_watch_snapshot import snapshot

from researchflow_client.errors import AuthFailed, ResyncRequired, ServerUnavailable
from researchflow_client.events import Event
from researchflow_client.snapshot import RunSnapshot
from researchflow_client.watch import session
from researchflow_client.watch.exit_codes import ExitCode
from researchflow_client.watch.session import Target, follow
from researchflow_client.watch.sinks import JsonLines
from researchflow_client.watch.state import WatchState


class End:
    """Script marker: the stream ends (as when it is closed under the session)."""


Item = Event | ResyncRequired | End


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
        if isinstance(item, End):
            raise StopAsyncIteration
        self.last_event_id = item.id
        return item

    async def aclose(self) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Loader:
    """Stands in for `load_run`: answers each call with the next of `answers` (an exception is
    raised), and records the calls' keywords."""

    def __init__(self, *answers: RunSnapshot | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, url: str, **options: Any) -> RunSnapshot:
        self.calls.append({"url": url, **options})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run_session(
    scripts: list[list[Item]],
    *,
    run_id: str | None = RUN,
    from_start: bool = True,
    loader: Loader | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> tuple[ExitCode, list[int | None], list[int], str]:
    opened: list[int | None] = []
    pending = list(scripts)

    def opener(url: str, **options: Any) -> Scripted:
        return Scripted(pending.pop(0), opened, **options)

    out, err = io.StringIO(), io.StringIO()
    target = Target(
        "ws://test/ws", "t", run_id=run_id, from_start=from_start, client_options=options
    )

    async def scenario() -> ExitCode:
        return await follow(
            target,
            WatchState(),
            JsonLines(out, err),
            opener=opener,  # type: ignore[arg-type]
            loader=loader or Loader(),
        )

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


RESYNCED = (
    "researchflow watch: the server could not replay the history: "
    "loaded the run's current state over REST\n"
)


def test_on_a_resync_it_loads_an_ended_run_over_rest_and_exits_at_once_with_its_outcome() -> None:
    loader = Loader(snapshot("failed", errorCode="STAGE_FAILED"))
    # Nothing follows the resync on the stream: the run ended, no event will ever come.
    code, opened, ids, err = run_session([[ResyncRequired(0, 1)]], loader=loader)
    assert code == ExitCode.FAILED
    assert (opened, ids, err) == ([0], [], RESYNCED)
    assert loader.calls == [
        {"url": "ws://test/ws", "token": "t", "run_id": RUN, "ssl": None, "timeout": 10.0}
    ]


def test_on_a_resync_of_a_running_run_it_goes_on_with_the_live_events_on_the_same_stream() -> None:
    events = Events().whole_run()
    code, opened, ids, err = run_session(
        [[ResyncRequired(0, 1), *events[5:]]], loader=Loader(snapshot("running"))
    )
    assert code == ExitCode.COMPLETED
    assert opened == [0]  # never reopened: the socket stayed subscribed
    assert ids == [event.id for event in events[5:]]
    assert err == RESYNCED


def test_on_a_pruned_log_it_loads_the_run_over_rest_too() -> None:
    code, opened, ids, err = run_session(
        [[ResyncRequired(0, 50)]], loader=Loader(snapshot("completed"))
    )
    assert (code, opened, ids, err) == (ExitCode.COMPLETED, [0], [], RESYNCED)


def test_it_loads_the_run_again_at_each_resync() -> None:
    make = Events()
    make.next_id = 50
    events = make.whole_run()
    loader = Loader(snapshot("running"), snapshot("running"))
    code, _, _, err = run_session(
        [[ResyncRequired(0, 1), *events[:3], ResyncRequired(52, 60), *events[3:]]], loader=loader
    )
    assert code == ExitCode.COMPLETED
    assert (len(loader.calls), err) == (2, RESYNCED * 2)


def test_it_retries_a_rest_api_that_is_unavailable_like_the_socket() -> None:
    gone = ServerUnavailable("http://test/api/runs/x/", 1, "connection refused")
    loader = Loader(gone, gone, snapshot("completed"))
    options = (("max_retries", 2), ("backoff_initial", 0.01))
    code, _, _, _ = run_session([[ResyncRequired(0, 1)]], loader=loader, options=options)
    assert (code, len(loader.calls)) == (ExitCode.COMPLETED, 3)


def test_it_gives_up_on_a_rest_api_still_unavailable_after_the_retries() -> None:
    gone = ServerUnavailable("http://test/api/runs/x/", 1, "connection refused")
    loader = Loader(gone, gone, gone)
    options = (("max_retries", 2), ("backoff_initial", 0.01))
    with pytest.raises(ServerUnavailable) as caught:
        run_session([[ResyncRequired(0, 1)]], loader=loader, options=options)
    assert caught.value.attempts == 3
    assert "connection refused" in str(caught.value)


def test_a_refused_token_over_rest_ends_the_session_as_on_the_socket() -> None:
    loader = Loader(AuthFailed("the REST API refused the token (HTTP 401)"))
    with pytest.raises(AuthFailed):
        run_session([[ResyncRequired(0, 1)]], loader=loader)


def test_on_a_project_a_resync_is_said_once_and_it_goes_on_live() -> None:
    events = Events().whole_run()
    loader = Loader()
    code, _, ids, err = run_session(
        [[ResyncRequired(0, 1), *events, ResyncRequired(30, 40), End()]],
        run_id=None,
        loader=loader,
    )
    assert code == ExitCode.INTERRUPTED  # a project ends only when the stream is closed
    assert ids == [event.id for event in events]  # the run's outcome does not stop it
    assert loader.calls == []  # no one run to load
    assert err == (
        "researchflow watch: the server could not replay the history: following live events "
        "only; what happened before is missing\n"
    )
