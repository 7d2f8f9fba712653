"""`RunEvents(..., transport="sse")` against the live app (daphne and uvicorn): the same run,
the same events in the same order as over the socket, a server restart with nothing lost or
repeated, and the same errors."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from live import create_run, drive, in_background, token

from devtools.servers import AppServer
from researchflow_client import AccessRevoked, AuthFailed, ClientError, Event, RunEvents, follow
from researchflow_client.catalogue import StageProgress

pytestmark = [pytest.mark.e2e]
FINAL = ("run.completed", "run.failed")
FAST = {"backoff_initial": 0.05, "backoff_max": 0.5}


async def to_the_end(events: RunEvents) -> list[Event]:
    got: list[Event] = []
    async for event in events:
        got.append(event)
        if event.type in FINAL:
            break
    return got


def test_it_follows_a_run_over_sse_as_over_the_socket(app: AppServer) -> None:
    alice = token(app)
    run = create_run(app, alice, "Streamed")

    async def scenario() -> tuple[list[Event], list[Event]]:
        async with (
            RunEvents(app.ws_url, token=alice, run_id=run["id"], transport="sse") as sse,
            RunEvents(app.ws_url, token=alice, run_id=run["id"]) as ws,
        ):
            driver = in_background(lambda: drive(app, alice, run))
            streamed = await asyncio.wait_for(to_the_end(sse), 60)
            socketed = await asyncio.wait_for(to_the_end(ws), 60)
        driver.join(30)
        assert not driver.errors  # type: ignore[attr-defined]
        return streamed, socketed

    streamed, socketed = asyncio.run(scenario())
    assert [(e.id, e.type, e.payload) for e in streamed] == [
        (e.id, e.type, e.payload) for e in socketed
    ]
    assert [e.id for e in streamed] == app.event_ids(alice, run=run["id"])[1:]  # live only
    assert [p.progress for p in (e.payload for e in streamed) if isinstance(p, StageProgress)]


def test_a_restart_mid_run_over_sse_loses_and_repeats_nothing(
    app: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = token(app)
    run = create_run(app, alice, "Across a restart")

    async def scenario() -> list[Event]:
        got: list[Event] = []
        async with RunEvents(
            app.ws_url,
            token=alice,
            run_id=run["id"],
            last_event_id=0,
            max_retries=None,
            transport="sse",
            **FAST,
        ) as ev:
            got.append(await asyncio.wait_for(ev.__anext__(), 20))  # run.created
            await asyncio.to_thread(app.stop, signal.SIGTERM)
            app.migrate = app.seed = False
            await asyncio.to_thread(app.start)
            # Driven at once, most of it before the client is back: it gets those from the
            # resume (lastEventId in the query), then the rest live.
            await asyncio.to_thread(drive, app, alice, run, progress_steps=2)
            got += await asyncio.wait_for(to_the_end(ev), 60)
        return got

    got = asyncio.run(scenario())
    assert [e.id for e in got] == app.event_ids(alice, run=run["id"])
    assert got[-1].type == "run.completed"
    assert any("reconnecting" in r.getMessage() for r in caplog.records)  # it did lose it


def test_refusals_over_sse_are_the_sockets_errors(daphne: AppServer) -> None:
    async def open_with(**options: Any) -> None:
        async with RunEvents(daphne.ws_url, transport="sse", **options):
            pass

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(open_with(token="not-a-token"))
    assert caught.value.server_message == "invalid or expired token"
    alice = token(daphne)
    with pytest.raises(AuthFailed) as caught:
        asyncio.run(open_with(token=alice, run_id="run_" + "0" * 20))
    assert caught.value.server_message == "run not found or not accessible"
    with pytest.raises(ClientError, match="lastEventId"):  # the server's rule: at most 2^63 - 1
        asyncio.run(open_with(token=alice, last_event_id=2**63))


def test_a_revoked_token_ends_the_sse_stream(app: AppServer) -> None:
    bob = token(app, "bob")
    run = create_run(app, bob, "Revoked stream")

    async def scenario() -> AccessRevoked:
        async with RunEvents(
            app.ws_url, token=bob, run_id=run["id"], last_event_id=0, transport="sse"
        ) as ev:
            assert (await asyncio.wait_for(ev.__anext__(), 10)).type == "run.created"
            await asyncio.to_thread(app.manage, "drf_create_token", "-r", "bob")
            with pytest.raises(AccessRevoked) as caught:
                await asyncio.wait_for(ev.__anext__(), 10)
            return caught.value

    assert asyncio.run(scenario()).code == 4401


def test_the_sync_wrapper_streams_too(daphne: AppServer) -> None:
    alice = token(daphne)
    run = create_run(daphne, alice, "Sync stream")
    driver = in_background(lambda: drive(daphne, alice, run))
    with follow(
        daphne.ws_url, token=alice, run_id=run["id"], last_event_id=0, transport="sse"
    ) as events:
        got = []
        for event in events:
            got.append(event.id)
            if event.type in FINAL:
                break
    driver.join(30)
    assert got == daphne.event_ids(alice, run=run["id"])
