"""Resume in the seed's order: connect, `auth` with `lastEventId`, then `subscribe`.

The cursor given in `auth` before any subscription waits for the first one; each subscription
then resumes the socket from max(cursor, last id it was given): what the log holds for it, in
log order, nothing twice (docs/protocol.md, "Resume").
"""

from __future__ import annotations

from typing import Any

import pytest

from events import log
from runs import services
from tests.ws_helpers import db, open_socket, receive_events, request, send, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]


def missed_run(world: Any) -> tuple[int, Any]:
    """A run created, started and its stage started after the cursor; returns (cursor, run)."""
    services.create_run(world.project, "seen", ["x"], world.alice)
    cursor = log.head()
    run = services.create_run(world.project, "missed", ["A"], world.alice)
    services.start_run(run.pk)
    services.start_stage(run.stages.get().pk)
    services.create_run(world.other_project, "foreign", ["x"], world.charlie)  # not Bob's
    return cursor, run


def logged_ids(world: Any, cursor: int, types: list[str]) -> list[int]:
    events = log.visible_after(
        cursor, projects=frozenset({world.project.pk}), run_id=None, types=types, limit=1000
    )
    return [e.id for e in events]


async def seed_order_socket(world: Any, **auth: Any) -> Any:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", token=await db(token_for)(world.bob), **auth)
    assert reply["type"] == "auth.success", reply
    return comm


async def test_it_replays_the_auth_cursor_at_the_first_subscription(world: Any) -> None:
    cursor, _run = await db(missed_run)(world)
    comm = await seed_order_socket(world, lastEventId=cursor)
    added = await request(comm, "subscribe", eventCategory="RUN_EVENTS")
    assert added["type"] == "subscription.added"
    expected = await db(logged_ids)(world, cursor, ["run.created", "run.started"])
    replayed = await receive_events(comm, len(expected))
    assert [e["id"] for e in replayed] == expected
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_a_later_subscription_gets_its_types_from_the_cursor_in_order(world: Any) -> None:
    cursor, run = await db(missed_run)(world)
    comm = await seed_order_socket(world, lastEventId=cursor)
    await send(comm, "subscribe", eventCategory="RUN_EVENTS")
    await send(comm, "subscribe", eventCategory="STAGE_EVENTS")
    expected = await db(logged_ids)(world, cursor, ["run.created", "run.started", "stage.started"])
    replayed = await receive_events(comm, len(expected))
    assert [e["id"] for e in replayed] == expected  # each once, in log order
    await db(services.report_progress)(await db(lambda: run.stages.get().pk)(), 40)
    (live,) = await receive_events(comm, 1)
    assert live["type"] == "stage.progress" and live["id"] > expected[-1]
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_an_auth_without_a_cursor_then_resume_still_replays(world: Any) -> None:
    cursor, _run = await db(missed_run)(world)
    comm = await seed_order_socket(world)
    await request(comm, "subscribe", eventCategory="RUN_EVENTS")
    assert await comm.receive_nothing(timeout=0.2)  # no cursor: live events only
    await send(comm, "resume", lastEventId=cursor)
    expected = await db(logged_ids)(world, cursor, ["run.created", "run.started"])
    replayed = await receive_events(comm, len(expected))
    assert [e["id"] for e in replayed] == expected
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_a_subscription_without_any_cursor_replays_nothing(world: Any) -> None:
    await db(missed_run)(world)
    comm = await seed_order_socket(world)
    await request(comm, "subscribe", eventCategory="RUN_EVENTS")
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()
