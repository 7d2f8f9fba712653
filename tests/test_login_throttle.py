"""Password guessing is throttled on every login surface: the API token view, the login form
and the admin's login form share one budget per username and one per client address.

Limits here are small (3 failures per username, 5 per address) so each test is quick.
"""

from __future__ import annotations

import itertools
import shutil
from typing import Any

import pytest
from django.core.cache.backends.redis import RedisCache
from django.test import Client
from rest_framework.test import APIClient

from researchflow import login_throttle
from researchflow.login_throttle import LoginThrottle
from tests.conftest import PASSWORD, World

pytestmark = pytest.mark.django_db

PER_USER = 3
PER_ADDRESS = 5
WINDOW = 900
SURFACES = ["api", "accounts", "admin"]
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_USER = PER_USER
    settings.LOGIN_FAILURES_PER_ADDRESS = PER_ADDRESS
    settings.LOGIN_FAILURE_WINDOW = WINDOW
    settings.TRUSTED_PROXY_COUNT = 0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The throttle's clock, at the start of a window; tests move it by assigning now[0]."""
    now = [WINDOW * 1000.0]
    monkeypatch.setattr(login_throttle.throttle, "clock", lambda: now[0])
    return now


def attempt(surface: str, username: str, password: str, **headers: str) -> Any:
    """One login; `headers` as WSGI META (REMOTE_ADDR=…, HTTP_X_FORWARDED_FOR=…)."""
    if surface == "api":
        body = {"username": username, "password": password}
        return APIClient().post("/api/auth/token/", body, format="json", **headers)
    url = "/accounts/login/" if surface == "accounts" else "/admin/login/"
    form = {"username": username, "password": password, "next": "/"}
    return Client().post(url, form, **headers)


def outcome(surface: str, response: Any) -> str:
    """ "ok", "refused" (wrong credentials) or "throttled", whatever the surface."""
    if response.status_code == 429:
        return "throttled"
    if surface == "api":
        return {200: "ok", 400: "refused"}[response.status_code]
    return {302: "ok", 200: "refused"}[response.status_code]


def user_for(surface: str, world: World) -> str:
    # The admin's form only lets staff in; the others take anyone.
    return "sam" if surface == "admin" else "alice"


def error_text(surface: str, response: Any) -> str:
    if surface == "api":
        return str(response.json()["detail"])
    return " ".join(response.context["form"].non_field_errors())


@pytest.mark.parametrize("surface", SURFACES)
def test_it_answers_429_after_the_limit_of_failures(world: World, surface: str) -> None:
    user = user_for(surface, world)
    outcomes = [outcome(surface, attempt(surface, user, "wrong")) for _ in range(PER_USER + 2)]
    assert outcomes == ["refused"] * PER_USER + ["throttled"] * 2


@pytest.mark.parametrize("surface", SURFACES)
def test_it_says_when_to_try_again(world: World, surface: str, clock: list[float]) -> None:
    user = user_for(surface, world)
    for _ in range(PER_USER):
        attempt(surface, user, "wrong")
    clock[0] += 60  # 14 minutes of the window are left
    response = attempt(surface, user, "wrong")
    assert response.status_code == 429
    assert response["Retry-After"] == str(WINDOW - 60)
    assert "Too many failed login attempts. Try again in 14 minutes." in error_text(
        surface, response
    )
    if surface == "api":
        assert response.json() == {
            "detail": "Too many failed login attempts. Try again in 14 minutes.",
            "code": "throttled",
            "errors": {},
        }


@pytest.mark.parametrize("surface", SURFACES)
def test_it_throttles_one_username_under_address_rotation(world: World, surface: str) -> None:
    user = user_for(surface, world)
    outcomes = [
        outcome(surface, attempt(surface, user, "wrong", REMOTE_ADDR=next(_addresses)))
        for _ in range(PER_USER + 1)
    ]
    assert outcomes == ["refused"] * PER_USER + ["throttled"]


@pytest.mark.parametrize("surface", SURFACES)
def test_it_throttles_one_username_under_forwarded_for_rotation_behind_a_proxy(
    world: World, surface: str, settings: Any
) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    user = user_for(surface, world)
    outcomes = [
        outcome(surface, attempt(surface, user, "wrong", HTTP_X_FORWARDED_FOR=next(_addresses)))
        for _ in range(PER_USER + 1)
    ]
    assert outcomes == ["refused"] * PER_USER + ["throttled"]


@pytest.mark.parametrize("surface", SURFACES)
def test_it_throttles_one_address_trying_many_usernames(world: World, surface: str) -> None:
    outcomes = [
        outcome(surface, attempt(surface, f"user{n}", "wrong", REMOTE_ADDR="203.0.113.50"))
        for n in range(PER_ADDRESS + 1)
    ]
    assert outcomes == ["refused"] * PER_ADDRESS + ["throttled"]
    # Another address is not held back by that one's failures.
    assert outcome(surface, attempt(surface, "user99", "wrong", REMOTE_ADDR="203.0.113.51")) == (
        "refused"
    )


@pytest.mark.parametrize("surface", SURFACES)
def test_it_ignores_forwarded_for_rotation_without_a_trusted_proxy(
    world: World, surface: str
) -> None:
    outcomes = [
        outcome(surface, attempt(surface, f"user{n}", "wrong", HTTP_X_FORWARDED_FOR=f"6.6.6.{n}"))
        for n in range(PER_ADDRESS + 1)
    ]
    assert outcomes[-1] == "throttled"


@pytest.mark.parametrize("surface", SURFACES)
def test_it_answers_unknown_usernames_like_known_ones(world: World, surface: str) -> None:
    def story(username: str) -> list[tuple[int, str]]:
        answers = []
        for _ in range(PER_USER + 1):
            response = attempt(surface, username, "wrong", REMOTE_ADDR=next(_addresses))
            answers.append((response.status_code, error_text(surface, response)))
        return answers

    known = story(user_for(surface, world))
    unknown = story("nobody-by-this-name")
    assert known == unknown
    assert known[-1][0] == 429


@pytest.mark.parametrize("surface", SURFACES)
def test_it_refuses_the_right_password_after_lockout_until_the_window_passes(
    world: World, surface: str, clock: list[float]
) -> None:
    user = user_for(surface, world)
    for _ in range(PER_USER):
        attempt(surface, user, "wrong")
    clock[0] += WINDOW - 1
    assert outcome(surface, attempt(surface, user, PASSWORD)) == "throttled"
    clock[0] += 1
    assert outcome(surface, attempt(surface, user, PASSWORD)) == "ok"


@pytest.mark.parametrize("surface", SURFACES)
def test_it_does_not_count_successful_logins(world: World, surface: str) -> None:
    user = user_for(surface, world)
    outcomes = [outcome(surface, attempt(surface, user, PASSWORD)) for _ in range(PER_USER * 3)]
    assert outcomes == ["ok"] * (PER_USER * 3)
    assert outcome(surface, attempt(surface, user, "wrong")) == "refused"


def test_it_counts_case_and_spaces_of_a_username_as_one_account(world: World) -> None:
    for spelling in ["Alice", " alice", "ALICE "]:
        assert outcome("api", attempt("api", spelling, "wrong")) == "refused"
    assert outcome("api", attempt("api", "alice", PASSWORD)) == "throttled"


def test_it_shares_one_budget_between_the_api_and_the_forms(world: World) -> None:
    attempt("api", "sam", "wrong")
    attempt("accounts", "sam", "wrong")
    attempt("admin", "sam", "wrong")
    assert outcome("admin", attempt("admin", "sam", PASSWORD)) == "throttled"
    assert outcome("api", attempt("api", "sam", PASSWORD)) == "throttled"


def test_it_shows_the_lockout_on_the_login_page(world: World) -> None:
    for _ in range(PER_USER):
        attempt("accounts", "alice", "wrong")
    response = attempt("accounts", "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed login attempts. Try again in" in response.content
    assert b'<form method="post"' in response.content  # the form is still there to retry


def test_it_shares_counters_between_processes_through_redis(world: World) -> None:
    from devtools.servers import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        # Two processes' caches: separate clients and connection pools on one Redis.
        first = LoginThrottle(cache=RedisCache(server.url, {}))
        second = LoginThrottle(cache=RedisCache(server.url, {}))
        for n in range(PER_USER):
            (first if n % 2 else second).record_failure(f"192.0.2.{n}", "alice")
        assert first.retry_after("192.0.2.200", "alice") is not None
        assert second.retry_after("192.0.2.201", "alice") is not None
        assert second.retry_after("192.0.2.201", "bob") is None


def test_it_fails_open_when_the_cache_is_down(world: World, caplog: Any) -> None:
    from devtools.servers import free_port

    broken = LoginThrottle(
        cache=RedisCache(
            f"redis://127.0.0.1:{free_port()}/0", {"OPTIONS": {"socket_connect_timeout": 1}}
        )
    )
    broken.record_failure("192.0.2.1", "alice")
    assert broken.retry_after("192.0.2.1", "alice") is None
    assert "cache unavailable (ConnectionError)" in caplog.text
