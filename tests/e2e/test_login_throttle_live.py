"""Password guessing against a live server (the issue's attack, rerun): 200 wrong passwords,
each with a different X-Forwarded-For, then the right one, on each login surface — the API
token view, /accounts/login/ and /admin/login/ — under daphne and uvicorn, with no trusted
proxy and with one. The default limits apply (10 failures per username, 50 per address).

Each test prints its figure ("throttle under header rotation": how many attempts got an
answer other than 429) for docs/security/logins.md.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.servers import DEMO_PASSWORDS, AppServer

pytestmark = [pytest.mark.e2e]

PER_USER = 10
PER_ADDRESS = 50
ATTEMPTS = 200
# One account per surface, so each surface's figure starts from a clean budget.
SURFACE_USER = {"api": "alice", "accounts": "bob", "admin": "admin"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a successful form login's 302 is the answer we want to see


class Attacker:
    """One client: a cookie jar, the CSRF token of the login form it last fetched."""

    def __init__(self, app: AppServer) -> None:
        self.app = app
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(self, path: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.app.url + path, data=data, headers=headers)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(
        self, surface: str, username: str, password: str, forwarded: str
    ) -> tuple[int, bytes]:
        headers = {"X-Forwarded-For": forwarded}
        if surface == "api":
            body = json.dumps({"username": username, "password": password}).encode()
            headers["Content-Type"] = "application/json"
            return self.request("/api/auth/token/", body, headers)
        path = "/accounts/login/" if surface == "accounts" else "/admin/login/"
        if not self.csrf_cookie():
            assert self.request(path, None, {})[0] == 200
        form = {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": self.csrf_cookie(),
            "next": "/",
        }
        return self.request(path, urllib.parse.urlencode(form).encode(), headers)

    def csrf_cookie(self) -> str:
        return next((c.value or "" for c in self.jar if c.name == "csrftoken"), "")

    def has_session(self) -> bool:
        return any(c.name == "sessionid" for c in self.jar)


@pytest.fixture(
    scope="module",
    params=[("daphne", 0), ("uvicorn", 0), ("uvicorn", 1)],
    ids=["daphne-no-proxy", "uvicorn-no-proxy", "uvicorn-one-proxy"],
)
def live(request: Any) -> Iterator[AppServer]:
    server, proxies = request.param
    env = {
        "TRUSTED_PROXY_COUNT": str(proxies),
        # These tests measure the per-username limit; spraying has its own server below.
        "LOGIN_FAILURES_PER_ADDRESS": "100000",
    }
    with AppServer(server, env=env) as app:
        yield app


@pytest.mark.parametrize("surface", ["api", "accounts", "admin"])
def test_it_throttles_a_surface_under_forwarded_for_rotation(live: AppServer, surface: str) -> None:
    attacker = Attacker(live)
    username = SURFACE_USER[surface]
    statuses = [
        attacker.login(surface, username, "wrong-guess", f"10.{n // 250}.{n % 250}.7")[0]
        for n in range(ATTEMPTS)
    ]
    through = sum(1 for status in statuses if status != 429)
    status, body = attacker.login(surface, username, DEMO_PASSWORDS[username], "10.99.99.99")
    proxies = live.env["TRUSTED_PROXY_COUNT"]
    print(
        f"\nthrottle under header rotation [{live.server}, {proxies} proxy, {surface}]: {through}"
    )
    assert statuses[:PER_USER] == [400 if surface == "api" else 200] * PER_USER
    assert through == PER_USER
    assert status == 429
    assert b'"token"' not in body and not attacker.has_session()
    assert re.search(rb"Too many failed login attempts. Try again in 1[45] minutes.", body)


def test_it_throttles_an_address_spraying_usernames_under_uvicorn() -> None:
    # uvicorn rewrote the client address from X-Forwarded-For for any local peer
    # (proxy_headers): with no trusted proxy it must not, or rotating the header evades this.
    with AppServer("uvicorn") as app:
        attacker = Attacker(app)
        statuses = [
            attacker.login("api", f"user{n}", "wrong-guess", f"10.1.{n // 250}.{n % 250}")[0]
            for n in range(ATTEMPTS)
        ]
    through = sum(1 for status in statuses if status != 429)
    print(f"\nthrottle under header rotation [uvicorn, spraying {ATTEMPTS} usernames]: {through}")
    assert through == PER_ADDRESS


def minutes_blanked(body: bytes) -> bytes:
    return re.sub(rb"in \d+ minutes", b"in N minutes", body)


def test_it_answers_unknown_usernames_alike_in_the_same_time() -> None:
    with AppServer("daphne") as app:
        app.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('carol', password='carol-dev-pass-1')",
        )
        attacker = Attacker(app)

        def story(username: str) -> tuple[list[tuple[int, bytes]], list[float]]:
            answers, seconds = [], []
            for n in range(PER_USER + 1):
                started = time.perf_counter()
                answers.append(attacker.login("api", username, "wrong-guess", f"10.2.0.{n}"))
                seconds.append(time.perf_counter() - started)
            return answers, seconds

        known, known_s = story("carol")
        unknown, unknown_s = story("nobody-by-this-name")
    # Same statuses, same bodies (but for the minutes left), 429 at the same attempt.
    assert [(code, minutes_blanked(body)) for code, body in known] == [
        (code, minutes_blanked(body)) for code, body in unknown
    ]
    assert known[-1][0] == 429
    # Before the lockout both hash a password (Django's ModelBackend hashes for unknown users
    # too); without that, an unknown name would answer ~100x faster than a known one.
    ratio = statistics.median(unknown_s[:PER_USER]) / statistics.median(known_s[:PER_USER])
    print(
        f"\nfailed login, median: known {statistics.median(known_s[:PER_USER]) * 1000:.0f} ms, "
        f"unknown {statistics.median(unknown_s[:PER_USER]) * 1000:.0f} ms; locked: "
        f"{known_s[-1] * 1000:.0f} / {unknown_s[-1] * 1000:.0f} ms"
    )
    assert 1 / 3 < ratio < 3
    assert re.search(rb'"code":\s*"throttled"', known[-1][1])
