"""The seed's message protocol on /ws, driven with WebsocketCommunicator."""

from __future__ import annotations

import re
from typing import Any

import pytest

from runs import services
from tests.ws_helpers import (
    authed_socket,
    db,
    open_socket,
    receive_events,
    request,
    send,
    session_cookie,
    token_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def test_it_greets_with_client_id_and_version() -> None:
    comm, hello = await open_socket()
    assert hello["payload"]["version"] == "1.0"
    assert re.fullmatch(r"[0-9a-f]{32}", hello["payload"]["clientId"])
    assert hello["payload"]["authenticated"] is False
    assert TS.match(hello["timestamp"])
    other, hello2 = await open_socket()
    assert hello2["payload"]["clientId"] != hello["payload"]["clientId"]
    await comm.disconnect()
    await other.disconnect()


async def test_it_answers_ping_with_pong() -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "ping")
    assert reply["type"] == "pong" and reply["payload"] == {} and TS.match(reply["timestamp"])
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[]", "invalid_message"),
        ('{"payload": {}}', "invalid_message"),
        ('{"type": 7}', "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "ping", "extra": 1}', "invalid_message"),
        ('{"type": "ping", "payload": []}', "invalid_message"),
        ('{"type": "subscribe", "payload": {}}', "invalid_message"),
        ('{"type": "subscribe", "payload": {"eventType": "run.exploded"}}', "unknown_event_type"),
        ('{"type": "subscribe", "payload": {"eventCategory": "NOPE"}}', "unknown_category"),
        (
            '{"type": "subscribe", "payload": '
            '{"eventType": "run.created", "eventCategory": "RUN_EVENTS"}}',
            "invalid_message",
        ),
        ('{"type": "unsubscribe", "payload": {"eventType": "run.created"}}', "not_subscribed"),
        ('{"type": "auth", "payload": {"token": 5}}', "invalid_message"),
        ('{"type": "auth", "payload": {"lastEventId": -1}}', "invalid_message"),
        ('{"type": "auth", "payload": {"eventTypes": ["x"]}}', "unknown_event_type"),
        ('{"type": "resume", "payload": {"lastEventId": 3}}', "not_authenticated"),
        ('{"type": "resume", "payload": {}}', "invalid_message"),
    ],
)
async def test_it_answers_bad_input_with_a_precise_error_and_stays_open(
    frame: str, code: str
) -> None:
    comm, _ = await open_socket()
    await comm.send_to(text_data=frame)
    reply = await comm.receive_json_from(timeout=5)
    assert reply["type"] == "error"
    assert reply["payload"]["details"]["code"] == code
    assert reply["payload"]["message"]
    assert (await request(comm, "ping"))["type"] == "pong"  # still serving
    await comm.disconnect()


async def test_it_refuses_binary_frames_with_an_error() -> None:
    comm, _ = await open_socket()
    await comm.send_to(bytes_data=b"\x00\x01")
    reply = await comm.receive_json_from(timeout=5)
    assert reply["payload"]["details"]["code"] == "binary_not_supported"
    await comm.disconnect()


async def test_it_closes_1009_on_a_frame_over_64_kib() -> None:
    comm, _ = await open_socket()
    await comm.send_to(text_data='{"type":"ping","payload":{"x":"' + "a" * 70_000 + '"}}')
    out = await comm.receive_output(timeout=5)
    assert out == {
        "type": "websocket.close",
        "code": 1009,
        "reason": "message too big: at most 65536 bytes",
    }


async def test_it_adds_and_removes_subscriptions_listing_all_of_them() -> None:
    comm, _ = await open_socket()
    added = await request(comm, "subscribe", eventType="run.created")
    assert added["type"] == "subscription.added"
    assert added["payload"] == {"eventType": "run.created", "subscriptions": ["run.created"]}
    added = await request(comm, "subscribe", eventCategory="STAGE_EVENTS")
    assert added["payload"]["subscriptions"] == ["STAGE_EVENTS", "run.created"]
    removed = await request(comm, "unsubscribe", eventType="run.created")
    assert removed["type"] == "subscription.removed"
    assert removed["payload"] == {"eventType": "run.created", "subscriptions": ["STAGE_EVENTS"]}
    await comm.disconnect()


async def test_it_reports_status(world: Any) -> None:
    comm = await authed_socket(world.alice, types=["run.started"])
    status = await request(comm, "get_status")
    assert status["type"] == "status"
    payload = status["payload"]
    assert payload["userId"] == "alice"
    assert payload["subscriptions"] == ["run.started"]
    assert payload["messageCount"] == 0
    await comm.disconnect()


async def test_it_authenticates_with_a_rest_token(world: Any) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", token=await db(token_for)(world.alice), userId="alice")
    assert reply == {
        "type": "auth.success",
        "timestamp": reply["timestamp"],
        "payload": {"userId": "alice", "projectId": None, "runId": None},
    }
    await comm.disconnect()


async def test_it_authenticates_with_the_session_cookie(world: Any) -> None:
    comm, hello = await open_socket(cookie=await session_cookie(world.bob))
    assert hello["payload"]["authenticated"] is True
    assert hello["payload"]["userId"] == "bob"
    reply = await request(comm, "auth", projectId=world.project.pk)
    assert reply["type"] == "auth.success"
    assert reply["payload"]["projectId"] == world.project.pk
    await comm.disconnect()


async def test_it_ignores_cookies_from_clients_without_an_origin(world: Any) -> None:
    comm, hello = await open_socket(origin=None, cookie=await session_cookie(world.bob))
    assert hello["payload"]["authenticated"] is False
    await comm.disconnect()


async def test_it_refuses_a_foreign_origin() -> None:
    from channels.testing import WebsocketCommunicator

    from researchflow.asgi import application

    comm = WebsocketCommunicator(application, "/ws", headers=[(b"origin", b"https://evil.example")])
    connected, _ = await comm.connect(timeout=5)
    assert not connected


async def test_it_sends_subscribed_events_in_order(world: Any) -> None:
    comm = await authed_socket(world.alice, categories=["RUN_EVENTS", "STAGE_EVENTS"])
    run = await db(services.create_run)(world.project, "Cohort A", ["Ingest"], world.alice, 1000)
    await db(services.start_run)(run.pk)
    stage = await db(lambda: run.stages.get())()
    await db(services.start_stage)(stage.pk)
    await db(services.report_progress)(stage.pk, 45, 450, 1000, "Processing 450 of 1000 rows")
    events = await receive_events(comm, 4)
    assert [e["type"] for e in events] == [
        "run.created",
        "run.started",
        "stage.started",
        "stage.progress",
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    progress = events[-1]["payload"]
    assert progress["progress"] == 45 and progress["itemsTotal"] == 1000
    assert progress["stageName"] == "Ingest" and progress["stageIndex"] == 0
    assert set(events[0]) == {"id", "type", "timestamp", "payload"}
    await comm.disconnect()


async def test_it_sends_nothing_to_a_socket_without_subscriptions(world: Any) -> None:
    comm = await authed_socket(world.alice)
    await db(services.create_run)(world.project, "Quiet", ["A"], world.alice)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_it_sends_only_the_subscribed_types(world: Any) -> None:
    comm = await authed_socket(world.alice, types=["run.started"])
    run = await db(services.create_run)(world.project, "Typed", ["A"], world.alice)
    await db(services.start_run)(run.pk)
    (event,) = await receive_events(comm, 1)
    assert event["type"] == "run.started"
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_it_counts_messages_in_status(world: Any) -> None:
    comm = await authed_socket(world.alice, categories=["RUN_EVENTS"])
    await db(services.create_run)(world.project, "Counted", ["A"], world.alice)
    await receive_events(comm, 1)
    status = await request(comm, "get_status")
    assert status["payload"]["messageCount"] == 1
    assert status["payload"]["lastEventId"] is not None
    await comm.disconnect()


async def test_it_unsubscribes(world: Any) -> None:
    comm = await authed_socket(world.alice, types=["run.created"])
    await request(comm, "unsubscribe", eventType="run.created")
    await db(services.create_run)(world.project, "Unheard", ["A"], world.alice)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_it_survives_a_flood_of_garbage(world: Any) -> None:
    comm, _ = await open_socket()
    for frame in [" ", "null", "1", '"x"', "{}", '{"type": null}', "{", "[[[[[[]]]]]]"]:
        await comm.send_to(text_data=frame)
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] == "error"
    await send(comm, "ping")
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    await comm.disconnect()
