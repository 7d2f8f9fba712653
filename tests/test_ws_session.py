"""A socket authenticated by the session cookie ends with its session (issue 10 item 2): logout,
flush, expiry and a password change close it with 4401 at the hub's next re-check."""

from __future__ import annotations

import time
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from events.gateway import credentials
from runs import services
from tests.ws_helpers import (
    ALL_CATEGORIES,
    db,
    open_socket,
    receive_events,
    request,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]
CLOSED = {"type": "websocket.close", "code": 4401}


@pytest.fixture
def rechecks(settings: Any, monkeypatch: Any) -> list[float]:
    """Fast re-checks, each one's end time recorded (the hub binds credentials.recheck at start)."""
    settings.WS_REAUTH_INTERVAL = 0.1
    done: list[float] = []
    original = credentials.recheck

    def counted(*args: Any) -> Any:
        result = original(*args)
        done.append(time.monotonic())
        return result

    monkeypatch.setattr(credentials, "recheck", counted)
    return done


def _login(user: User) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return client, f"{django_settings.SESSION_COOKIE_NAME}={key}".encode()


async def session_socket(user: User) -> tuple[Any, Client]:
    client, cookie = await db(_login)(user)
    comm, hello = await open_socket(cookie=cookie)
    assert hello["payload"]["userId"] == user.username
    reply = await request(comm, "auth", eventCategories=ALL_CATEGORIES)
    assert reply["type"] == "auth.success"
    return comm, client


def _session_key(client: Client) -> str:
    return str(client.cookies[django_settings.SESSION_COOKIE_NAME].value)


async def test_it_keeps_a_session_socket_while_the_session_is_valid(
    world: Any, rechecks: list[float]
) -> None:
    comm, _ = await session_socket(world.bob)
    await wait_until(lambda: len(rechecks) >= 3, what="three re-checks")
    await db(services.create_run)(world.project, "Still here", ["x"], world.alice)
    assert (await receive_events(comm, 1))[0]["type"] == "run.created"
    await comm.disconnect()


async def test_it_closes_a_session_socket_at_logout(world: Any, rechecks: list[float]) -> None:
    comm, client = await session_socket(world.bob)
    response = await db(client.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await comm.receive_output(timeout=3) == CLOSED


async def test_it_closes_a_session_socket_when_the_session_is_flushed(
    world: Any, rechecks: list[float]
) -> None:
    comm, client = await session_socket(world.bob)
    store = import_module(django_settings.SESSION_ENGINE).SessionStore
    await db(store(_session_key(client)).delete)()
    assert await comm.receive_output(timeout=3) == CLOSED


async def test_it_closes_a_session_socket_when_the_session_expires(
    world: Any, rechecks: list[float]
) -> None:
    comm, client = await session_socket(world.bob)
    past = timezone.now() - timedelta(seconds=1)
    await db(Session.objects.filter(pk=_session_key(client)).update)(expire_date=past)
    assert await comm.receive_output(timeout=3) == CLOSED


async def test_it_closes_a_session_socket_when_the_password_changes(
    world: Any, rechecks: list[float]
) -> None:
    comm, _ = await session_socket(world.bob)

    def change_password() -> None:
        bob = User.objects.get(pk=world.bob.pk)
        bob.set_password("a-new-password")
        bob.save()

    await db(change_password)()
    assert await comm.receive_output(timeout=3) == CLOSED


async def test_it_sends_nothing_published_after_the_close(
    world: Any, rechecks: list[float]
) -> None:
    comm, client = await session_socket(world.bob)
    await db(client.post)("/accounts/logout/")
    assert await comm.receive_output(timeout=3) == CLOSED
    await db(services.create_run)(world.project, "After logout", ["x"], world.alice)
    assert await comm.receive_nothing(timeout=0.3)


@pytest.mark.parametrize(
    "engine",
    ["django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.cached_db"],
)
async def test_it_closes_at_logout_with_other_session_engines(
    world: Any, rechecks: list[float], settings: Any, engine: str
) -> None:
    settings.SESSION_ENGINE = engine
    comm, client = await session_socket(world.bob)
    await wait_until(
        lambda: len(rechecks) >= 2, what="two re-checks"
    )  # valid sessions survive re-checks here too
    assert (await request(comm, "ping"))["type"] == "pong"
    await db(client.post)("/accounts/logout/")
    assert await comm.receive_output(timeout=3) == CLOSED


async def test_it_closes_at_a_password_change_with_signed_cookie_sessions(
    world: Any, rechecks: list[float], settings: Any
) -> None:
    # Signed-cookie sessions live in the browser and cannot be revoked server-side, but the
    # auth hash inside them still stops verifying once the password changes.
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    comm, _ = await session_socket(world.bob)
    await wait_until(lambda: len(rechecks) >= 2, what="two re-checks")
    assert (await request(comm, "ping"))["type"] == "pong"
    bob = await db(User.objects.get)(pk=world.bob.pk)
    bob.set_password("a-new-password")
    await db(bob.save)()
    assert await comm.receive_output(timeout=3) == CLOSED


def test_it_rechecks_many_sessions_in_one_query_each(
    world: Any, django_assert_num_queries: Any
) -> None:
    refs = []
    for user in (world.alice, world.bob, world.victor, world.charlie) * 5:
        client = Client()
        client.force_login(user)
        session = client.session
        auth_hash = session["_auth_user_hash"]
        refs.append(credentials.SessionRef(session.session_key, user.pk, auth_hash))
    refs.append(credentials.SessionRef("gone", world.bob.pk, refs[1].auth_hash))
    with django_assert_num_queries(3):  # users, memberships, sessions
        _standing, valid = credentials.recheck({r.user_id for r in refs}, refs)
    assert valid == set(refs[:-1])
