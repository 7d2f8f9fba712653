"""Delivery on /ws: backpressure, coalescing, rate limits, resume and the hub's gap repair."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from events import log
from events.gateway.hub import Hub
from events.models import Event, EventLogState
from events.record import LoggedEvent
from runs import services
from runs.models import Role
from tests.ws_helpers import (
    ALL_CATEGORIES,
    HOST,
    ORIGIN,
    Gate,
    authed_socket,
    db,
    gated_socket,
    metric,
    offered_everything_logged,
    open_socket,
    receive_events,
    request,
    send,
    the_hub,
    token_for,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]
ALL = ALL_CATEGORIES


def running_stage(world: Any) -> Any:
    run = services.create_run(world.project, "Busy", ["Ingest", "Model"], world.alice)
    services.start_run(run.pk)
    stage = run.stages.get(position=0)
    services.start_stage(stage.pk)
    return stage


async def test_it_coalesces_progress_for_a_client_that_falls_behind(world: Any) -> None:
    stage = await db(running_stage)(world)
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()
    for progress in (10, 20, 30, 40, 50):
        await db(services.report_progress)(stage.pk, progress)
    await offered_everything_logged()
    gate.open.set()
    events = await receive_events(comm, 2)
    # The first frame was already being written when the client stalled; of the four that
    # queued behind it, only the newest survives.
    assert [e["payload"]["progress"] for e in events] == [10, 50]
    assert await comm.receive_nothing(timeout=0.2)
    status = await request(comm, "get_status")
    assert status["payload"]["messageCount"] == 2
    assert the_hub().stats()["messages"]["coalesced"] == 3
    await comm.disconnect()


async def test_it_keeps_progress_of_different_stages_apart(world: Any) -> None:
    stage = await db(running_stage)(world)
    other = await db(lambda: stage.run.stages.get(position=1))()
    await db(services.start_stage)(other.pk)
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()
    await db(services.report_progress)(stage.pk, 5)
    await db(services.report_progress)(stage.pk, 10)
    await db(services.report_progress)(other.pk, 20)
    await db(services.report_progress)(stage.pk, 30)
    await offered_everything_logged()
    gate.open.set()
    events = await receive_events(comm, 3)
    assert [(e["payload"]["stageIndex"], e["payload"]["progress"]) for e in events] == [
        (0, 5),
        (1, 20),
        (0, 30),
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    await comm.disconnect()


async def test_it_closes_a_slow_consumer_with_4008_and_spares_the_others(
    world: Any, settings: Any
) -> None:
    settings.WS_SEND_QUEUE = 3
    gate = Gate()
    slow = await gated_socket(gate, world.bob)
    fast = await authed_socket(world.alice, categories=ALL)
    gate.open.clear()
    for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    assert len(await receive_events(fast, 6)) == 6
    # The slow socket closes without waiting for its stalled write.
    out = await slow.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4008}
    assert the_hub().stats()["messages"]["dropped"] >= 3
    await fast.disconnect()


async def test_it_rate_limits_and_then_closes_abusers(settings: Any) -> None:
    settings.WS_RATE_LIMIT = 0.5
    settings.WS_RATE_BURST = 3
    comm, _ = await open_socket()
    for _ in range(3):
        assert (await request(comm, "ping"))["type"] == "pong"
    reply = await request(comm, "ping")
    assert reply["type"] == "error"
    assert reply["payload"]["details"]["code"] == "rate_limited"
    await send(comm, "ping")
    assert (await comm.receive_json_from(timeout=3))["payload"]["details"]["code"] == "rate_limited"
    await send(comm, "ping")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 1008}


async def test_it_refills_the_rate_limit_bucket(settings: Any) -> None:
    settings.WS_RATE_LIMIT = 20
    settings.WS_RATE_BURST = 2
    comm, _ = await open_socket()
    for _ in range(6):
        assert (await request(comm, "ping"))["type"] == "pong"
        # The stimulus, not a wait for an effect: the time one token takes to come back
        # (1/WS_RATE_LIMIT), with a margin. Without it the third ping is refused.
        await asyncio.sleep(1.2 / settings.WS_RATE_LIMIT)
    await comm.disconnect()


async def test_it_resumes_after_a_disconnect_without_gap_or_duplicate(world: Any) -> None:
    comm = await authed_socket(world.bob, categories=ALL)
    run = await db(services.create_run)(world.project, "Resumable", ["A"], world.alice)
    (created,) = await receive_events(comm, 1)
    await comm.disconnect()
    # Missed while offline, plus an event in a project Bob can't see.
    await db(services.start_run)(run.pk)
    stage = await db(lambda: run.stages.get())()
    await db(services.start_stage)(stage.pk)
    await db(services.create_run)(world.other_project, "Foreign", ["x"], world.charlie)
    comm = await authed_socket(world.bob, categories=ALL, lastEventId=created["id"])
    missed = await receive_events(comm, 2)
    assert [e["type"] for e in missed] == ["run.started", "stage.started"]
    await db(services.report_progress)(stage.pk, 50)
    (live,) = await receive_events(comm, 1)
    assert live["type"] == "stage.progress" and live["id"] > missed[-1]["id"]
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_it_switches_from_replay_to_live_without_gap_under_concurrent_writes(
    world: Any,
) -> None:
    stage = await db(running_stage)(world)
    start = await db(
        lambda: Event.objects.order_by("-position").values_list("position", flat=True).first()
    )()

    written = [0]

    async def writer() -> None:
        for n in range(40):
            await db(services.add_artifact)(
                stage.run_id,
                kind="table",
                name=f"part_{n}.csv",
                size_bytes=n,
                content_type="text/csv",
            )
            written[0] += 1

    task = asyncio.create_task(writer())
    # Some written before the socket asks, some during the replay, some after.
    await wait_until(lambda: written[0] >= 3, what="the first artifacts to be written")
    comm = await authed_socket(world.bob, types=["artifact.created"], lastEventId=start)
    await task
    events = await receive_events(comm, 40)
    assert [e["payload"]["sizeBytes"] for e in events] == list(range(40))
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_it_delivers_an_event_that_commits_while_the_replay_reads_the_log(
    world: Any, monkeypatch: Any
) -> None:
    # The event commits after the replay's read and reaches the socket before the replay is
    # queued: it is held, then sent after the replay, not lost between the two.
    await db(services.create_run)(world.project, "seen", ["x"], world.alice)
    last_seen = await db(log.head)()
    await db(services.create_run)(world.project, "missed", ["x"], world.alice)
    comm, _ = await open_socket()
    hub = the_hub()
    loop = asyncio.get_running_loop()
    real_read = log.visible_after
    late: list[str] = []

    def read_then_commit(*args: Any, **kwargs: Any) -> list[LoggedEvent]:
        rows = real_read(*args, **kwargs)
        if not late:
            late.append(services.create_run(world.project, "late", ["x"], world.alice).pk)
            head = log.head()
            # In the replay's thread (the loop runs on): wait for the hub to take "late" in.
            deadline = time.monotonic() + 5
            while (hub.last_id or 0) < head:
                assert time.monotonic() < deadline, "the hub never took in the late event"
                time.sleep(0.005)
            # The hub offers what it took in at the end of that loop turn: this callback,
            # queued after it, returns once the socket was offered "late".
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
        return rows

    monkeypatch.setattr(log, "visible_after", read_then_commit)
    reply = await request(
        comm,
        "auth",
        token=await db(token_for)(world.bob),
        eventCategories=ALL,
        lastEventId=last_seen,
    )
    assert reply["type"] == "auth.success"
    events = await receive_events(comm, 2)
    assert [e["payload"]["runName"] for e in events] == ["missed", "late"]
    assert await comm.receive_nothing(timeout=0.1)
    await comm.disconnect()


async def test_it_replays_every_missed_progress_step(world: Any) -> None:
    stage = await db(running_stage)(world)
    start = await db(
        lambda: Event.objects.order_by("-position").values_list("position", flat=True).first()
    )()
    for progress in (10, 20, 30):
        await db(services.report_progress)(stage.pk, progress)
    comm = await authed_socket(world.bob, types=["stage.progress"], lastEventId=start)
    events = await receive_events(comm, 3)
    assert [e["payload"]["progress"] for e in events] == [10, 20, 30]
    await comm.disconnect()


async def test_it_resumes_with_a_resume_message(world: Any) -> None:
    comm = await authed_socket(world.bob, categories=ALL)
    run = await db(services.create_run)(world.project, "R", ["A"], world.alice)
    (created,) = await receive_events(comm, 1)
    await send(comm, "resume", lastEventId=0)
    # Everything up to what this socket already got is not sent again.
    assert await comm.receive_nothing(timeout=0.2)
    await db(services.start_run)(run.pk)
    (started,) = await receive_events(comm, 1)
    assert started["id"] > created["id"]
    await comm.disconnect()


async def test_it_asks_for_a_resync_when_the_log_was_pruned(world: Any) -> None:
    await db(services.create_run)(world.project, "Old", ["A"], world.alice)
    head = await db(
        lambda: Event.objects.order_by("-position").values_list("position", flat=True).first()
    )()
    await db(EventLogState.objects.update_or_create)(pk=1, defaults={"pruned_through": head})
    comm, _ = await open_socket()
    await send(
        comm, "auth", token=await db(token_for)(world.bob), eventCategories=ALL, lastEventId=0
    )
    assert (await comm.receive_json_from(timeout=3))["type"] == "auth.success"
    resync = await comm.receive_json_from(timeout=3)
    assert resync["type"] == "resync.required"
    assert resync["payload"] == {"lastEventId": 0, "oldestEventId": head + 1}
    # …and live events still flow afterwards.
    await db(services.create_run)(world.project, "New", ["A"], world.alice)
    assert len(await receive_events(comm, 1)) == 1
    await comm.disconnect()


async def test_it_asks_for_a_resync_when_too_much_was_missed(world: Any, settings: Any) -> None:
    settings.WS_RESUME_MAX_EVENTS = 2
    for name in ("a", "b", "c"):
        await db(services.create_run)(world.project, name, ["A"], world.alice)
    comm, _ = await open_socket()
    await send(
        comm, "auth", token=await db(token_for)(world.bob), eventCategories=ALL, lastEventId=0
    )
    await comm.receive_json_from(timeout=3)
    assert (await comm.receive_json_from(timeout=3))["type"] == "resync.required"
    await comm.disconnect()


async def test_the_hub_repairs_a_lost_channel_layer_message(world: Any, settings: Any) -> None:
    settings.WS_GAP_CHECK_INTERVAL = 0.1
    settings.WS_GAP_WAIT = 0.05
    comm = await authed_socket(world.bob, categories=ALL)
    hub = Hub.running()[0]
    real_send = hub.layer.group_send
    dropped: list[Any] = []

    async def lossy_send(group: str, message: dict[str, Any]) -> None:
        if not dropped:
            dropped.append(message["id"])  # the first event never reaches the layer
            return
        await real_send(group, message)

    hub.layer.group_send = lossy_send
    try:
        await db(services.create_run)(world.project, "Lost tail", ["A"], world.alice)
        (event,) = await receive_events(comm, 1)  # the tail check finds it in the log
        assert event["id"] == dropped[0]
        assert hub.gap_repaired == 1
    finally:
        hub.layer.group_send = real_send
    await comm.disconnect()


async def test_the_hub_delivers_out_of_order_messages_in_log_order(world: Any) -> None:
    comm = await authed_socket(world.bob, categories=ALL)
    hub = Hub.running()[0]
    held: list[dict[str, Any]] = []
    real_send = hub.layer.group_send

    async def reordering_send(group: str, message: dict[str, Any]) -> None:
        if not held:
            held.append(message)  # hold the first back…
            return
        await real_send(group, message)
        await real_send(group, held.pop())  # …and send it after the second

    hub.layer.group_send = reordering_send
    try:
        await db(services.create_run)(world.project, "First", ["A"], world.alice)
        await db(services.create_run)(world.project, "Second", ["A"], world.alice)
        events = await receive_events(comm, 2)
        assert [e["payload"]["runName"] for e in events] == ["First", "Second"]
    finally:
        hub.layer.group_send = real_send
    await comm.disconnect()


async def test_a_stalled_write_resumes_in_order_with_replies_behind_it(world: Any) -> None:
    # The first event's send suspends (the gate is shut): the socket's writer task takes
    # the half-sent frame over; what follows, events and replies, queues behind it in order.
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()
    for name in ("r1", "r2", "r3"):
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    hub = await offered_everything_logged()  # the three are queued before the ping is read
    assert gate.stalled == 1
    await send(comm, "ping")
    # Messages are handled in order: once the subscription shows in the hub's stats, the ping
    # before it was read and answered (into the queue), before r4 commits.
    await send(comm, "subscribe", eventType="run.created")
    await wait_until(
        lambda: hub.stats()["subscriptions"]["byType"].get("run.created") == 1,
        what="the subscribe message to be handled",
    )
    for name in ("r4", "r5"):
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    await offered_everything_logged()
    assert await comm.receive_nothing(timeout=0.05)  # nothing passes the shut gate
    gate.open.set()
    frames = [await comm.receive_json_from(timeout=5) for _ in range(7)]
    assert [f["type"] for f in frames] == ["run.created"] * 3 + [
        "pong",
        "subscription.added",
    ] + ["run.created"] * 2
    assert [f["payload"]["runName"] for f in frames if "id" in f] == ["r1", "r2", "r3", "r4", "r5"]
    status = await request(comm, "get_status")
    assert status["payload"]["messageCount"] == 5
    (consumer,) = hub.subscribers
    assert consumer._writer is None and consumer._queue is None  # drained: none kept
    await comm.disconnect()


async def test_a_client_that_leaves_during_a_stalled_write_is_released(world: Any) -> None:
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()
    await db(services.create_run)(world.project, "stuck", ["x"], world.alice)
    await db(services.create_run)(world.project, "queued", ["x"], world.alice)
    hub = await offered_everything_logged()
    assert gate.stalled == 1  # "stuck" is suspended in the server's send
    await comm.disconnect()
    # The task that owned the suspended send is cancelled, and the socket leaves the hub.
    await wait_until(
        lambda: gate.cancelled == 1 and not hub.subscribers, what="the stalled write's release"
    )
    assert gate.stalled == 0
    gate.open.set()


def _synthetic(event_id: int, prev: int, project: str, name: str) -> LoggedEvent:
    payload = {"runId": "run_" + "s" * 20, "projectId": project, "runName": name}
    frame = orjson.dumps(
        {"id": event_id, "type": "run.created", "timestamp": "t", "payload": payload}
    ).decode()
    return LoggedEvent(
        id=event_id,
        prev_id=prev,
        type="run.created",
        project_id=project,
        run_id=payload["runId"],
        timestamp="t",
        payload=payload,
        frame=frame,
    )


async def test_a_batch_from_several_projects_reaches_each_socket_in_log_order(
    world: Any,
) -> None:
    second = await db(services.create_project)("Second cohort", owner=world.alice)
    await db(services.set_member)(second, world.bob, Role.MEMBER)
    both = await authed_socket(world.bob, categories=ALL)  # member of both projects
    one = await authed_socket(world.victor, categories=ALL)  # the first project only
    staff = await authed_socket(world.sam, categories=ALL)  # every project
    hub = Hub.running()[0]
    start = hub.last_id or 0
    projects = [world.project.pk, second.pk] * 3
    # Accepted in one loop turn, as a burst from the layer is: offered as one batch.
    for i, project in enumerate(projects):
        hub.accept(_synthetic(start + i + 1, start + i, project, f"e{i}"))
    names = [f"e{i}" for i in range(6)]
    for comm, expected in (
        (both, names),
        (staff, names),
        (one, [n for n, p in zip(names, projects, strict=True) if p == world.project.pk]),
    ):
        got = await receive_events(comm, len(expected))
        assert [e["payload"]["runName"] for e in got] == expected
        assert await comm.receive_nothing(timeout=0.1)
    for comm in (both, one, staff):
        await comm.disconnect()


class _BrokenSocket:
    """A subscriber whose offer() fails: a bug in one socket's code path."""

    user_id = None
    visible_projects = None  # indexed with the staff sockets: offered every event

    def __init__(self) -> None:
        self.went_away = False

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None:
        raise RuntimeError("boom")

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]:
        return False, frozenset()

    def credential_key(self) -> str | None:
        return None

    def apply_standing(self, standing: Any, valid_tokens: set[str]) -> None:
        return None

    def go_away(self) -> None:
        self.went_away = True


async def test_a_failing_socket_is_closed_and_costs_the_others_nothing(
    world: Any, caplog: Any
) -> None:
    comm = await authed_socket(world.bob, categories=ALL)
    hub = Hub.running()[0]
    broken = _BrokenSocket()
    hub.add(broken)
    try:
        await db(services.create_run)(world.project, "Still delivered", ["A"], world.alice)
        (event,) = await receive_events(comm, 1)
        assert event["payload"]["runName"] == "Still delivered"
        assert broken.went_away
        assert "offering events to a socket failed" in caplog.text
    finally:
        hub.remove(broken)
    await comm.disconnect()


async def test_a_socket_whose_server_refuses_a_frame_is_dropped_quietly(world: Any) -> None:
    # The server's send() raising at once (uvicorn's ClientDisconnected: the peer is gone)
    # while the hub offers a batch: that socket stops being offered events, the others still
    # get theirs, and nothing is raised into the hub.
    gate = Gate()
    gone = await gated_socket(gate, world.bob)
    fine = await authed_socket(world.alice, categories=ALL)
    hub = the_hub()
    consumer = next(s for s in hub.subscribers if s.user_id == world.bob.pk)
    gate.refuse = True
    for name in ("a", "b"):
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    assert [e["payload"]["runName"] for e in await receive_events(fine, 2)] == ["a", "b"]
    await offered_everything_logged()
    assert gate.refused == 1  # offered nothing more after the refused frame
    assert consumer.message_count == 0  # "a" was refused, "b" never offered: none counted
    await fine.disconnect()
    await gone.disconnect()


async def stalled_resume(world: Any, missed: int) -> tuple[Gate, WebsocketCommunicator]:
    """Bob resumes after missing `missed` runs (r1…), his writes stalled from the auth reply
    on: the reply and the whole replay queue behind the stalled write."""
    await db(services.create_run)(world.project, "r0", ["x"], world.alice)
    last_seen = await db(lambda: Event.objects.latest("position").position)()
    for i in range(1, missed + 1):
        await db(services.create_run)(world.project, f"r{i}", ["x"], world.alice)
    gate = Gate()
    comm = WebsocketCommunicator(gate.app, "/ws", headers=[HOST, ORIGIN])
    assert (await comm.connect(timeout=5))[0]
    await comm.receive_json_from(timeout=5)
    gate.open.clear()
    token = await db(token_for)(world.bob)
    replayed = metric("researchflow_ws_resume_events_replayed_total")
    await send(comm, "auth", token=token, eventCategories=ALL, lastEventId=last_seen)
    # Counted once the replay is queued (the auth reply stalled at the gate ahead of it).
    await wait_until(
        lambda: metric("researchflow_ws_resume_events_replayed_total") >= replayed + missed,
        what="the replay to be queued",
    )
    assert gate.stalled == 1
    return gate, comm


async def test_a_resume_larger_than_the_send_queue_reaches_a_stalled_client(
    world: Any, settings: Any
) -> None:
    # A replay is held to WS_RESUME_MAX_EVENTS, not to WS_SEND_QUEUE: a client catching up on
    # a slow link is not closed as a slow consumer by its own backlog. Live events queued
    # behind the replay meet the limit on their own.
    settings.WS_SEND_QUEUE = 3
    gate, comm = await stalled_resume(world, missed=8)
    for name in ("live1", "live2"):  # 2 live events behind 8 replayed: within the limit
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    await offered_everything_logged()
    gate.open.set()
    assert (await comm.receive_json_from(timeout=5))["type"] == "auth.success"
    events = await receive_events(comm, 10)
    assert [e["payload"]["runName"] for e in events] == [f"r{i}" for i in range(1, 9)] + [
        "live1",
        "live2",
    ]
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_live_events_behind_a_replay_still_meet_the_send_queue_limit(
    world: Any, settings: Any
) -> None:
    settings.WS_SEND_QUEUE = 3
    _gate, comm = await stalled_resume(world, missed=5)
    for i in range(4):  # the fourth live event overflows the limit of 3
        await db(services.create_run)(world.project, f"live{i}", ["x"], world.alice)
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4008}


async def test_a_stalled_write_the_server_then_refuses_ends_quietly(world: Any) -> None:
    # The stalled send fails when it resumes (the peer vanished meanwhile): the socket stops
    # taking events and its writer task ends without an unretrieved exception.
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    (consumer,) = the_hub().subscribers
    gate.open.clear()
    for name in ("stuck", "queued"):
        await db(services.create_run)(world.project, name, ["x"], world.alice)
    await offered_everything_logged()
    assert gate.stalled == 1
    writer = consumer._writer
    assert writer is not None
    gate.refuse = True
    gate.open.set()
    await asyncio.wait_for(asyncio.shield(writer), 5)
    assert writer.exception() is None
    assert gate.refused == 1  # "queued" was not tried after the refused "stuck"
    assert consumer._writer is None
    assert consumer.message_count == 0
    await comm.disconnect()


async def test_it_counts_events_no_local_socket_may_see_as_discarded(
    world: Any, settings: Any
) -> None:
    # One shard: the hub hears every project (as it does when two projects share a shard, or
    # before routing), so it takes in the other project's event and can only discard it.
    settings.WS_EVENT_SHARDS = 1
    bob = await authed_socket(world.bob, categories=ALL)
    await db(services.create_run)(world.other_project, "Charlie's", ["x"], world.charlie)
    await offered_everything_logged()
    assert the_hub().stats()["events"] == {"received": 1, "discarded": 1}
    await db(services.create_run)(world.project, "Bob's", ["x"], world.alice)
    assert len(await receive_events(bob, 1)) == 1
    assert the_hub().stats()["events"] == {"received": 2, "discarded": 1}
    await bob.disconnect()


async def test_it_discards_nothing_while_a_staff_socket_sees_every_project(world: Any) -> None:
    sam = await authed_socket(world.sam, categories=ALL)
    await db(services.create_run)(world.other_project, "Charlie's", ["x"], world.charlie)
    assert len(await receive_events(sam, 1)) == 1
    assert the_hub().stats()["events"] == {"received": 1, "discarded": 0}
    await sam.disconnect()
