"""`GET /events/stream`: the socket's events as Server-Sent Events, with the socket's rules
(authentication, who sees what, filters, resume, loss, revocation) and precise refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token

from events.gateway.credentials import make_socket_token
from events.models import Event
from researchflow.asgi import application
from runs import services
from tests.sse_helpers import Stream
from tests.ws_helpers import (
    ALL_CATEGORIES,
    authed_socket,
    db,
    offered_everything_logged,
    receive_events,
    session_cookie,
    the_hub,
    token_for,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]


def logged_ids() -> list[int]:
    return [
        int(p or 0) for p in Event.objects.order_by("position").values_list("position", flat=True)
    ]


async def stream_for(user: User, **query: str) -> Stream:
    stream = Stream(query=query, token=await db(token_for)(user))
    await stream.opened()
    return stream


async def test_it_streams_the_sockets_frames_with_id_and_type(world: Any) -> None:
    stream = await stream_for(world.alice)
    socket = await authed_socket(world.alice, categories=ALL_CATEGORIES)
    run = await db(services.create_run)(world.project, "Cohort", ["A"], world.alice)
    await db(services.start_run)(run.pk)
    sse = await stream.events(2)
    frames = await receive_events(socket, 2)
    assert [e.frame for e in sse] == frames  # the same JSON as on the socket
    assert [e.id for e in sse] == [str(f["id"]) for f in frames]
    assert [e.event for e in sse] == ["run.created", "run.started"]
    assert stream.headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert stream.headers[b"cache-control"] == b"no-store"
    assert stream.parser.retry == 2000
    await stream.disconnect()
    await socket.disconnect()


async def test_it_gives_another_projects_user_none_of_this_projects_events(world: Any) -> None:
    charlie = await stream_for(world.charlie)
    alice = await stream_for(world.alice)
    run = await db(services.create_run)(world.project, "Private", ["A"], world.alice)
    await db(services.start_run)(run.pk)
    assert len(await alice.events(2)) == 2
    await offered_everything_logged()
    assert await charlie.nothing(timeout=0.3)
    # ... while its own project's events reach it: the stream is alive, only filtered.
    own = await db(services.create_run)(world.other_project, "Charlie's", ["A"], world.charlie)
    (event,) = await charlie.events(1)
    assert event.frame["payload"]["runId"] == own.pk
    await charlie.disconnect()
    await alice.disconnect()


async def test_it_gives_staff_every_project(world: Any) -> None:
    sam = await stream_for(world.sam)
    await db(services.create_run)(world.project, "Alice's", ["A"], world.alice)
    await db(services.create_run)(world.other_project, "Charlie's", ["A"], world.charlie)
    events = await sam.events(2)
    assert {e.frame["payload"]["projectId"] for e in events} == {
        world.project.pk,
        world.other_project.pk,
    }
    await sam.disconnect()


async def test_it_narrows_to_a_run_and_filters_by_type(world: Any) -> None:
    run_a = await db(services.create_run)(world.project, "A", ["x"], world.alice)
    run_b = await db(services.create_run)(world.project, "B", ["x"], world.alice)
    stream = Stream(
        query={"runId": run_a.pk, "types": "run.started,run.completed"},
        token=await db(token_for)(world.bob),
    )
    opened = await stream.opened()
    assert opened == {"userId": "bob", "projectId": world.project.pk, "runId": run_a.pk}
    await db(services.start_run)(run_b.pk)
    await db(services.start_run)(run_a.pk)
    (event,) = await stream.events(1)
    assert (event.event, event.frame["payload"]["runId"]) == ("run.started", run_a.pk)
    await stream.disconnect()


async def test_it_filters_by_category_and_project(world: Any) -> None:
    stream = Stream(
        query={"projectId": world.project.pk, "categories": "STAGE_EVENTS"},
        token=await db(token_for)(world.sam),
    )
    await stream.opened()
    run = await db(services.create_run)(world.project, "A", ["x"], world.alice)
    await db(services.create_run)(world.other_project, "B", ["x"], world.charlie)
    await db(services.start_run)(run.pk)
    stage = await db(lambda: run.stages.get())()
    await db(services.start_stage)(stage.pk)
    (event,) = await stream.events(1)
    assert event.event == "stage.started"
    await offered_everything_logged()
    assert await stream.nothing(timeout=0.2)
    await stream.disconnect()


async def test_it_authenticates_with_the_session_cookie(world: Any) -> None:
    stream = Stream(cookie=await session_cookie(world.bob))
    assert (await stream.opened())["userId"] == "bob"
    await db(services.create_run)(world.project, "Seen", ["x"], world.alice)
    assert (await stream.events(1))[0].event == "run.created"
    await stream.disconnect()


async def test_it_accepts_a_socket_token_in_the_query(world: Any) -> None:
    token = await db(make_socket_token)(world.bob)
    stream = Stream(query={"token": token})
    assert (await stream.opened())["userId"] == "bob"
    await stream.disconnect()


# --- refusals, before any stream ---------------------------------------------------------


async def refusal(stream: Stream) -> tuple[int, dict[str, Any]]:
    status = await stream.start()
    return status, await stream.body()


async def test_it_refuses_without_credentials() -> None:
    status, body = await refusal(Stream())
    assert status == 401
    assert body["code"] == "not_authenticated"


async def test_it_refuses_a_bad_token(world: Any) -> None:
    stream = Stream(token="not-a-token")
    status, body = await refusal(stream)
    assert (status, body["code"]) == (401, "authentication_failed")
    assert stream.headers[b"www-authenticate"].startswith(b"Token")


async def test_it_refuses_an_expired_socket_token(world: Any, settings: Any) -> None:
    settings.WS_SOCKET_TOKEN_MAX_AGE = 1
    token = await db(make_socket_token)(world.bob)
    await asyncio.sleep(2.1)  # the token's age is counted in whole seconds
    status, _ = await refusal(Stream(query={"token": token}))
    assert status == 401


async def test_it_refuses_a_rest_token_in_the_url(world: Any) -> None:
    status, body = await refusal(Stream(query={"token": await db(token_for)(world.bob)}))
    assert status == 400
    assert "Authorization header" in body["detail"]


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ({"types": "stage.progress,no.such"}, "unknown_event_type", "types: unknown name"),
        ({"categories": "NOPE"}, "unknown_category", "categories: unknown name"),
        ({"lastEventId": "1.5"}, "invalid_message", "lastEventId must be an integer"),
        ({"lastEventId": "-1"}, "invalid_message", "lastEventId must be an integer"),
        ({"lastEventId": "99999999999999999999"}, "invalid_message", "between 0 and"),
        ({"runid": "x"}, "invalid_message", "unknown query parameters"),
        ({"runId": ""}, "invalid_message", "runId must not be empty"),
        ({"types": ",".join(["run.started"] * 65)}, "invalid_message", "at most 64 items"),
    ],
)
async def test_it_refuses_bad_parameters_precisely(
    world: Any, query: dict[str, str], code: str, words: str
) -> None:
    status, body = await refusal(Stream(query=query, token=await db(token_for)(world.bob)))
    assert status == 400
    assert body["code"] == code
    assert words in body["detail"]
    if code == "unknown_event_type":
        assert "stage.progress" in body["allowed"]


async def test_it_refuses_a_malformed_last_event_id_header(world: Any) -> None:
    stream = Stream(headers=[(b"last-event-id", b"abc")], token=await db(token_for)(world.bob))
    status, body = await refusal(stream)
    assert status == 400
    assert body["detail"].startswith("Last-Event-ID must be an integer")


async def test_it_answers_a_foreign_and_an_unknown_run_alike(world: Any) -> None:
    foreign = await db(services.create_run)(world.other_project, "Theirs", ["x"], world.charlie)
    token = await db(token_for)(world.bob)
    answers = [
        await refusal(Stream(query={"runId": run_id}, token=token))
        for run_id in (foreign.pk, "run_00000000000000000000")
    ]
    assert answers[0] == answers[1]
    assert answers[0][0] == 404
    assert answers[0][1]["detail"] == "run not found or not accessible"
    status, body = await refusal(Stream(query={"projectId": world.other_project.pk}, token=token))
    assert (status, body["detail"]) == (404, "project not found or not accessible")


async def test_it_refuses_a_user_id_that_is_not_the_token_owner(world: Any) -> None:
    status, body = await refusal(
        Stream(query={"userId": "alice"}, token=await db(token_for)(world.bob))
    )
    assert (status, body["code"]) == (403, "permission_denied")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"origin", b"http://evil.example")],
        [(b"origin", b"http://localhost:9999")],
        [(b"origin", b"http://localhost"), (b"origin", b"http://localhost")],
        [(b"sec-fetch-site", b"cross-site")],
        [(b"sec-fetch-site", b"same-site")],
    ],
)
async def test_it_refuses_pages_of_foreign_origins_even_with_a_cookie(
    world: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    stream = Stream(headers=headers, cookie=await session_cookie(world.bob))
    status, body = await refusal(stream)
    assert (status, body["code"]) == (403, "forbidden_origin")


async def test_it_answers_an_allowed_origin_with_cors_headers(world: Any, settings: Any) -> None:
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.org"]
    stream = Stream(
        headers=[(b"origin", b"https://app.example.org")], cookie=await session_cookie(world.bob)
    )
    await stream.opened()
    assert stream.headers[b"access-control-allow-origin"] == b"https://app.example.org"
    assert stream.headers[b"access-control-allow-credentials"] == b"true"
    await stream.disconnect()
    same = Stream(
        headers=[(b"origin", b"http://localhost")], cookie=await session_cookie(world.bob)
    )
    await same.opened()
    assert b"access-control-allow-origin" not in same.headers
    await same.disconnect()


async def test_it_refuses_other_methods(world: Any) -> None:
    stream = Stream(method="POST", token=await db(token_for)(world.bob))
    status, _ = await refusal(stream)
    assert status == 405
    assert stream.headers[b"allow"] == b"GET"


async def test_it_caps_streams_per_user(world: Any, settings: Any) -> None:
    settings.WS_MAX_CONNECTIONS_PER_USER = 1
    first = await stream_for(world.bob)
    status, body = await refusal(Stream(token=await db(token_for)(world.bob)))
    assert (status, body["code"]) == (429, "too_many_connections")
    await first.disconnect()
    await wait_until(lambda: not the_hub().subscribers, what="the first stream to leave")
    second = await stream_for(world.bob)
    await second.disconnect()


# --- resume --------------------------------------------------------------------------------


async def test_it_resumes_from_the_last_event_id_header_then_goes_live(world: Any) -> None:
    run = await db(services.create_run)(world.project, "Resumed", ["A", "B"], world.alice)
    await db(services.start_run)(run.pk)
    logged = await db(logged_ids)()
    # A browser's EventSource reconnecting: the header wins over the first connect's query.
    stream = Stream(
        query={"lastEventId": "0"},
        headers=[(b"last-event-id", str(logged[0]).encode())],
        token=await db(token_for)(world.bob),
    )
    await stream.opened()
    replayed = await stream.events(len(logged) - 1)
    assert [int(e.id or 0) for e in replayed] == logged[1:]
    await db(services.fail_run)(run.pk, "TIMEOUT")
    (live,) = await stream.events(1)
    assert live.event == "run.failed" and int(live.id or 0) > logged[-1]
    await stream.disconnect()


async def test_it_resumes_from_the_query_on_the_first_connect(world: Any) -> None:
    run = await db(services.create_run)(world.project, "Resumed", ["A"], world.alice)
    await db(services.start_run)(run.pk)
    first, second = await db(logged_ids)()
    stream = Stream(query={"lastEventId": str(first)}, token=await db(token_for)(world.bob))
    await stream.opened()
    (event,) = await stream.events(1)
    assert int(event.id or 0) == second
    await offered_everything_logged()
    assert await stream.nothing(timeout=0.2)
    await stream.disconnect()


async def test_it_answers_resync_required_when_the_replay_is_too_long(
    world: Any, settings: Any
) -> None:
    settings.WS_RESUME_MAX_EVENTS = 2
    run = await db(services.create_run)(world.project, "Long", ["A", "B"], world.alice)
    await db(services.start_run)(run.pk)
    await db(services.fail_run)(run.pk, "TIMEOUT")
    stream = Stream(query={"lastEventId": "0"}, token=await db(token_for)(world.bob))
    await stream.opened()
    notice = await stream.next()
    assert notice.event == "resync.required"
    assert notice.id is None  # a browser keeps its Last-Event-ID
    assert notice.frame["payload"] == {"lastEventId": 0, "oldestEventId": 1}
    await db(services.create_run)(world.project, "Live after resync", ["x"], world.alice)
    assert (await stream.events(1))[0].event == "run.created"
    await stream.disconnect()


# --- the end of a stream -------------------------------------------------------------------


async def closed_with(stream: Stream, timeout: float = 5) -> int:
    while True:
        event = await stream.next(timeout)
        if event.event == "close":
            assert stream.ended  # the notice is the response's last chunk
            code: int = event.frame["payload"]["code"]
            return code


async def test_it_ends_a_session_stream_at_logout(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    client = Client()
    await db(client.force_login)(world.bob)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    stream = Stream(cookie=cookie)
    await stream.opened()
    await db(client.post)("/accounts/logout/")
    assert await closed_with(stream) == 4401
    assert stream.ended
    await stream.comm.wait(5)  # the app returned: nothing holds the stream
    await db(services.create_run)(world.project, "After logout", ["x"], world.alice)
    assert not the_hub().subscribers


async def test_it_ends_a_stream_whose_token_is_revoked(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    stream = await stream_for(world.bob)
    await db(Token.objects.filter(user=world.bob).delete)()
    assert await closed_with(stream) == 4401


async def test_it_ends_a_project_stream_when_the_member_is_removed(
    world: Any, settings: Any
) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    stream = await stream_for(world.bob, projectId=world.project.pk)
    await db(services.remove_member)(world.project, world.bob)
    assert await closed_with(stream) == 4403


async def test_it_stops_events_of_a_project_the_member_left(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    stream = await stream_for(world.bob)
    (sub,) = the_hub().subscribers
    alice = await stream_for(world.alice)  # the hub goes on hearing the project
    await db(services.remove_member)(world.project, world.bob)
    await wait_until(
        lambda: world.project.pk not in (sub.visible_projects or ()),
        what="the re-check to narrow the stream's projects",
    )
    await db(services.create_run)(world.project, "After removal", ["x"], world.alice)
    await alice.events(1)
    await offered_everything_logged()
    assert await stream.nothing(timeout=0.2)
    await stream.disconnect()
    await alice.disconnect()


class Gate:
    """The ASGI app with a send a test can hold shut: a client that stops reading."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    async def app(self, scope: Any, receive: Any, send: Any) -> Any:
        async def gated_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                await self.open.wait()
            await send(message)

        return await application(scope, receive, gated_send)


async def test_it_closes_a_stalled_client_with_4008(world: Any, settings: Any) -> None:
    settings.WS_SEND_QUEUE = 3
    gate = Gate()
    stream = Stream(app=gate.app, token=await db(token_for)(world.bob))
    await stream.opened()
    gate.open.clear()
    run = await db(services.create_run)(world.project, "Flood", ["A", "B", "C"], world.alice)
    await db(services.start_run)(run.pk)
    for stage in await db(lambda: list(run.stages.all()))():
        await db(services.start_stage)(stage.pk)
    await wait_until(lambda: the_hub().dropped > 0, what="the stream's queue to overflow")
    gate.open.set()
    assert await closed_with(stream) == 4008
    await stream.comm.wait(5)
    assert not the_hub().subscribers


async def test_it_closes_with_1001_on_shutdown(world: Any) -> None:
    stream = await stream_for(world.bob)
    assert await the_hub().drain(grace=5) == 0
    assert await closed_with(stream) == 1001


async def test_it_sends_heartbeats(world: Any, settings: Any) -> None:
    settings.SSE_HEARTBEAT_INTERVAL = 0.05
    stream = await stream_for(world.bob)
    while (await stream.receive(2))["body"] != b": keepalive\n\n":
        pass
    await stream.disconnect()


async def test_it_leaves_the_hub_when_the_client_goes(world: Any) -> None:
    stream = await stream_for(world.bob)
    assert len(the_hub().subscribers) == 1
    await stream.disconnect()
    await wait_until(lambda: not the_hub().subscribers, what="the stream to leave the hub")


async def test_streams_share_one_encoded_message_per_event(world: Any) -> None:
    first = await stream_for(world.alice)
    second = await stream_for(world.bob)
    await db(services.create_run)(world.project, "Shared", ["x"], world.alice)
    bodies = []
    for stream in (first, second):
        while True:
            message = await stream.receive(5)
            if message.get("body", b"").startswith(b"id: "):
                bodies.append(message)
                break
    assert bodies[0] is bodies[1]  # built once, offered to both
    await first.disconnect()
    await second.disconnect()
