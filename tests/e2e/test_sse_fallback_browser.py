"""The dashboard behind a proxy that refuses WebSocket upgrades (a hospital or university proxy):
the page falls back to Server-Sent Events, follows a demo run live, survives a server restart
and resumes with nothing lost.

The proxy is a loopback TCP relay in this process: it answers any request carrying
`Upgrade: websocket` with 403 (as such proxies do) and relays every other request byte for
byte, so the page's `/ws` never opens while its `GET /events/stream` does.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from devtools.servers import DEMO_PASSWORDS, AppServer, free_port
from tests.e2e.test_dashboard_browser import (  # noqa: F401 (browser: a fixture)
    OUTSIDER,
    WAIT_MS,
    browser,
    feed_ids,
)

pytestmark = pytest.mark.e2e


class UpgradeRefusingProxy:
    """127.0.0.1:port → the app's port; WebSocket upgrades get `403 Forbidden`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused = 0  # upgrade requests refused
        self.relayed = 0  # other requests relayed
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> UpgradeRefusingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            headers = head.split(b"\r\n\r\n", 1)[0].lower()
            if re.search(rb"\r\nupgrade:\s*websocket", headers):
                self.refused += 1
                client.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            self.relayed += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
            except OSError:
                client.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            stack.enter_context(upstream)
            upstream.sendall(head)
            # One request per connection, so that every request head is inspected here.
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def proxied_app(request: pytest.FixtureRequest) -> Iterator[tuple[AppServer, UpgradeRefusingProxy]]:
    with (
        AppServer(request.param) as app,
        UpgradeRefusingProxy(app.port) as proxy,
    ):
        # An outsider with a project of their own; seed_demo makes members of one project only.
        name, password, project = OUTSIDER
        app.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from runs import services; "
            f"u = User.objects.create_user({name!r}, '{name}@example.org', {password!r}); "
            f"services.create_project({project!r}, owner=u)",
        )
        yield app, proxy


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def sign_in(
    context: BrowserContext, base: str, username: str, password: str | None = None
) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or DEMO_PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base + "/")
    return page, errors


def test_the_dashboard_follows_a_demo_run_over_sse_through_a_restart(
    context: BrowserContext,
    browser: Browser,  # noqa: F811 (the imported fixture)
    proxied_app: tuple[AppServer, UpgradeRefusingProxy],
) -> None:
    app, proxy = proxied_app
    base = proxy.url
    # A user of another project, on the same fallback: must see none of it.
    outsider_context = browser.new_context()
    outsider_context.set_default_timeout(WAIT_MS)
    outsider, outsider_errors = sign_in(outsider_context, base, OUTSIDER[0], OUTSIDER[1])
    expect(outsider.locator("#connection")).to_have_attribute("data-transport", "sse")
    expect(outsider.locator("#connection")).to_have_attribute("data-state", "open")
    page, errors = sign_in(context, base, "admin")
    connection = page.locator("#connection")
    # The socket is refused (twice), then the page streams.
    expect(connection).to_have_attribute("data-state", "open")
    expect(connection).to_have_attribute("data-transport", "sse")
    assert proxy.refused >= 2  # the page did try its socket first
    token = app.token("admin", DEMO_PASSWORDS["admin"])

    # --- a demo run, live through the stream ------------------------------------------------
    known = set(page.locator("article.run").evaluate_all("els => els.map(e => e.id)"))
    page.get_by_role("button", name="Start demo run").click()
    expect(page.locator("#demo-status")).to_have_text(re.compile("Demo run started"))
    card = page.locator("article.run").filter(has_text=re.compile(r"^Demo run \d"))
    expect(card).to_have_count(1)
    assert card.get_attribute("id") not in known
    run_id = str(card.get_attribute("id")).removeprefix("run-")
    expect(card).to_have_attribute("data-status", "running")
    bar = card.locator('[role="progressbar"]').first
    expect(bar).not_to_have_attribute("aria-valuenow", "0")  # progress arrived live
    before_stop = set(feed_ids(page, run_id))
    assert before_stop

    # --- the server restarts mid-run ----------------------------------------------------------
    app.stop()  # the demo runner, a thread in the server, dies with it
    expect(connection).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
    app.migrate = app.seed = False
    app.start()
    # Events the page can only get from the resume: made at once, straight to the server.
    app.api("POST", f"/api/runs/{run_id}/fail/", {"errorCode": "TIMEOUT"}, token)
    project_id = app.api("GET", f"/api/runs/{run_id}/", token=token)["projectId"]
    second = app.api(
        "POST",
        "/api/runs/",
        {"projectId": project_id, "name": "After the restart", "stages": ["Only"]},
        token,
    )
    app.api("POST", f"/api/runs/{second['id']}/start/", None, token)

    expect(connection).to_have_attribute("data-state", "open")
    expect(connection).to_have_attribute("data-transport", "sse")
    expect(card).to_have_attribute("data-status", "failed")
    expect(page.locator(f"#run-{second['id']}")).to_have_attribute("data-status", "running")

    # --- nothing lost, nothing twice ----------------------------------------------------------
    for rid in (run_id, second["id"]):
        expected = app.event_ids(token, run=rid)
        expect(page.locator(f'#event-feed li[data-run-id="{rid}"]')).to_have_count(len(expected))
        seen = feed_ids(page, rid)
        assert len(seen) == len(set(seen)), f"duplicates in the feed: {sorted(seen)}"
        assert sorted(seen) == expected
    assert before_stop < set(feed_ids(page, run_id))
    assert errors == []

    # --- the outsider's stream carried none of this project's events -------------------------
    expect(outsider.locator("#connection")).to_have_attribute("data-state", "open")
    expect(outsider.locator(".project h2")).to_have_text([OUTSIDER[2]])
    assert outsider.locator("#event-feed li").count() == 0
    assert outsider.locator(f"#run-{run_id}").count() == 0
    assert outsider_errors == []
    outsider_context.close()
