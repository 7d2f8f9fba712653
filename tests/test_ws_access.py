"""Who may see what on /ws: nobody sees another project's events."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from events.gateway.credentials import make_socket_token
from runs import services
from tests.ws_helpers import (
    ALL_CATEGORIES,
    authed_socket,
    db,
    open_socket,
    receive_events,
    request,
    session_cookie,
    the_hub,
    token_for,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]
ALL = ALL_CATEGORIES


async def test_it_gives_the_outsider_nothing(world: Any) -> None:
    charlie = await authed_socket(world.charlie, categories=ALL)
    alice = await authed_socket(world.alice, categories=ALL)
    run = await db(services.create_run)(world.project, "Private", ["A"], world.alice)
    await db(services.start_run)(run.pk)
    assert len(await receive_events(alice, 2)) == 2
    assert await charlie.receive_nothing(timeout=0.3)
    await charlie.disconnect()
    await alice.disconnect()


async def test_it_gives_staff_every_project(world: Any) -> None:
    sam = await authed_socket(world.sam, categories=ALL)
    await db(services.create_run)(world.project, "Alice's", ["A"], world.alice)
    await db(services.create_run)(world.other_project, "Charlie's", ["A"], world.charlie)
    events = await receive_events(sam, 2)
    assert {e["payload"]["projectId"] for e in events} == {
        world.project.pk,
        world.other_project.pk,
    }
    await sam.disconnect()


async def test_it_narrows_a_socket_to_a_run(world: Any) -> None:
    run_a = await db(services.create_run)(world.project, "A", ["x"], world.alice)
    run_b = await db(services.create_run)(world.project, "B", ["x"], world.alice)
    comm = await authed_socket(world.bob, categories=ALL, runId=run_a.pk)
    await db(services.start_run)(run_b.pk)
    await db(services.start_run)(run_a.pk)
    (event,) = await receive_events(comm, 1)
    assert event["payload"]["runId"] == run_a.pk
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_it_narrows_staff_to_a_project(world: Any) -> None:
    comm = await authed_socket(world.sam, categories=ALL, projectId=world.other_project.pk)
    await db(services.create_run)(world.project, "Alice's", ["A"], world.alice)
    await db(services.create_run)(world.other_project, "Charlie's", ["A"], world.charlie)
    (event,) = await receive_events(comm, 1)
    assert event["payload"]["projectId"] == world.other_project.pk
    await comm.disconnect()


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"token": "nope"}, "invalid or expired token"),
        ({"token": "wst.forged:signature"}, "invalid or expired token"),
        ({"userId": "alice"}, "authentication required: send a token or use a session"),
    ],
)
async def test_it_refuses_bad_credentials(auth: dict[str, Any], message: str) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", **auth)
    assert reply["type"] == "auth.failed"
    assert reply["payload"] == {"message": message}
    await comm.disconnect()


async def test_it_refuses_a_user_id_that_is_not_the_token_owner(world: Any) -> None:
    comm, _ = await open_socket()
    reply = await request(comm, "auth", token=await db(token_for)(world.alice), userId="bob")
    assert reply["type"] == "auth.failed"
    await comm.disconnect()


async def test_it_does_not_reveal_whether_a_foreign_project_or_run_exists(world: Any) -> None:
    foreign_run = await db(services.create_run)(world.other_project, "C", ["x"], world.charlie)
    token = await db(token_for)(world.alice)
    replies = []
    for scope in (
        {"projectId": world.other_project.pk},
        {"projectId": "prj_doesnotexist000000"},
        {"runId": foreign_run.pk},
        {"runId": "run_doesnotexist000000"},
    ):
        comm, _ = await open_socket()
        replies.append(await request(comm, "auth", token=token, **scope))
        await comm.disconnect()
    assert {r["type"] for r in replies} == {"auth.failed"}
    assert replies[0]["payload"] == replies[1]["payload"]
    assert replies[2]["payload"] == replies[3]["payload"]


async def test_it_refuses_a_run_outside_the_given_project(world: Any) -> None:
    other = await db(services.create_project)("Second", world.alice)
    run = await db(services.create_run)(other, "R", ["x"], world.alice)
    comm, _ = await open_socket()
    reply = await request(
        comm,
        "auth",
        token=await db(token_for)(world.alice),
        projectId=world.project.pk,
        runId=run.pk,
    )
    assert reply["type"] == "auth.failed"
    await comm.disconnect()


async def test_it_accepts_a_socket_token(world: Any) -> None:
    token = await db(make_socket_token)(world.victor)
    comm, _ = await open_socket()
    reply = await request(comm, "auth", token=token)
    assert reply["payload"]["userId"] == "victor"
    await comm.disconnect()


async def test_it_refuses_an_expired_socket_token(world: Any, settings: Any) -> None:
    token = await db(make_socket_token)(world.victor)
    settings.WS_SOCKET_TOKEN_MAX_AGE = -1
    comm, _ = await open_socket()
    reply = await request(comm, "auth", token=token)
    assert reply["type"] == "auth.failed"
    await comm.disconnect()


async def test_it_closes_4401_without_auth_in_time(settings: Any) -> None:
    settings.WS_AUTH_TIMEOUT = 0.2
    comm, _ = await open_socket()
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4401}


async def test_it_keeps_an_authenticated_socket_past_the_auth_timeout(
    world: Any, settings: Any
) -> None:
    settings.WS_AUTH_TIMEOUT = 0.2
    comm = await authed_socket(world.alice)
    # Twice the auth timeout: an unauthenticated socket is closed (4401) well within it.
    assert await comm.receive_nothing(timeout=2 * settings.WS_AUTH_TIMEOUT)
    assert (await request(comm, "ping"))["type"] == "pong"
    await comm.disconnect()


async def test_it_closes_a_silent_socket_after_the_heartbeat_timeout(
    world: Any, settings: Any
) -> None:
    settings.WS_HEARTBEAT_TIMEOUT = 0.3
    comm = await authed_socket(world.alice)
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 1001}


async def test_it_keeps_a_socket_that_pings(world: Any, settings: Any) -> None:
    settings.WS_HEARTBEAT_TIMEOUT = 0.4
    comm = await authed_socket(world.alice)
    # Five pings 0.15 s apart span almost twice the timeout; nothing but the pongs arrives
    # (a socket the heartbeat wrongly closed would show its 1001 close here).
    for _ in range(5):
        assert await comm.receive_nothing(timeout=0.15)
        assert (await request(comm, "ping"))["type"] == "pong"
    await comm.disconnect()


async def test_it_stops_events_when_a_member_is_removed(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    comm = await authed_socket(world.bob, categories=ALL)
    (socket,) = the_hub().subscribers
    await db(services.remove_member)(world.project, world.bob)
    await wait_until(
        lambda: world.project.pk not in (socket.visible_projects or ()),
        what="the re-check to narrow the socket's projects",
    )
    await db(services.create_run)(world.project, "After removal", ["x"], world.alice)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_it_closes_a_project_scoped_socket_when_access_is_lost(
    world: Any, settings: Any
) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    comm = await authed_socket(world.bob, categories=ALL, projectId=world.project.pk)
    await db(services.remove_member)(world.project, world.bob)
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4403}


async def test_it_closes_sockets_of_a_deactivated_user(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    comm = await authed_socket(world.bob, categories=ALL)
    await db(User.objects.filter(pk=world.bob.pk).update)(is_active=False)
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4401}


async def test_it_closes_sockets_whose_token_is_revoked(world: Any, settings: Any) -> None:
    settings.WS_REAUTH_INTERVAL = 0.1
    comm = await authed_socket(world.bob, categories=ALL)
    await db(Token.objects.filter(user=world.bob).delete)()
    out = await comm.receive_output(timeout=3)
    assert out == {"type": "websocket.close", "code": 4401}


async def test_it_caps_sockets_per_user(world: Any, settings: Any) -> None:
    settings.WS_MAX_CONNECTIONS_PER_USER = 2
    first = await authed_socket(world.alice)
    second = await authed_socket(world.alice)
    third, _ = await open_socket()
    reply = await request(third, "auth", token=await db(token_for)(world.alice))
    assert reply["type"] == "auth.failed"
    assert await third.receive_output(timeout=3) == {"type": "websocket.close", "code": 4429}
    hub = the_hub()

    def alices() -> int:
        return sum(s.user_id == world.alice.pk for s in hub.subscribers)

    assert alices() == 2
    await first.disconnect()
    await wait_until(lambda: alices() == 1, what="the first socket to leave (its slot freed)")
    fourth = await authed_socket(world.alice)  # a freed slot can be reused
    await second.disconnect()
    await fourth.disconnect()


async def test_it_caps_session_sockets_at_connect(world: Any, settings: Any) -> None:
    settings.WS_MAX_CONNECTIONS_PER_USER = 1
    cookie = await session_cookie(world.bob)
    first, _ = await open_socket(cookie=cookie)
    second, _ = await open_socket(cookie=cookie)
    reason = await second.receive_json_from(timeout=3)
    assert reason["payload"]["details"]["code"] == "too_many_connections"
    assert await second.receive_output(timeout=3) == {"type": "websocket.close", "code": 4429}
    await first.disconnect()
