"""The approvals inbox in a real browser against the real server: alice starts a run that waits
for a person's approval; bob, on his dashboard, sees "Waiting for me" count it live (an event,
no reload, no run opened), grants it from the inbox, and the run goes on to completion.

The run is driven by `runs.demo.run_demo(await_approval=True)` in a thread of the test: an
HTTP-only worker, like `manage.py demo_run --await-approval`, that stops after its first stage
until the approval is decided. Chromium is Debian's, as in test_dashboard_browser.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from devtools.servers import DEMO_PASSWORDS, AppServer
from runs.demo import run_demo

from .test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    open_dashboard,
    save_screenshot,
)

pytestmark = pytest.mark.e2e

OUTSIDER = ("charlie", "charlie-dev-pass", "Charlie's own project")
INBOX = "/api/approvals/inbox/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    with AppServer("daphne") as app:
        name, password, project = OUTSIDER
        app.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from runs import services; "
            f"u = User.objects.create_user({name!r}, '{name}@example.org', {password!r}); "
            f"services.create_project({project!r}, owner=u)",
        )
        yield app


def new_context(browser: Browser) -> BrowserContext:
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", reduced_motion="reduce"
    )
    ctx.set_default_timeout(WAIT_MS)
    return ctx


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for ctx in made:
        ctx.close()


class GatedRun:
    """alice's pipeline: a demo run that waits after its first stage for a person's grant."""

    def __init__(self, app: AppServer, token: str, project_id: str) -> None:
        self.lines: list[str] = []
        self.result: str | BaseException | None = None
        self.thread = threading.Thread(
            target=self._drive, args=(app.url, token, project_id), daemon=True
        )

    def _drive(self, url: str, token: str, project_id: str) -> None:
        try:
            self.result = run_demo(
                url,
                token,
                project_id,
                pace=0,
                log=self.lines.append,
                await_approval=True,
                assign_to=["bob"],
                approval_timeout=120,
            )
        except BaseException as exc:
            self.result = exc


def inbox_requests(page: Page) -> list[str]:
    """Every request the page makes to the inbox endpoint, as it makes them."""
    seen: list[str] = []
    page.on("request", lambda request: INBOX in request.url and seen.append(request.url))
    return seen


def test_bob_sees_the_approval_arrive_live_and_grants_it_from_the_inbox(
    browser: Browser, contexts: list[BrowserContext], app: AppServer
) -> None:
    alice_token = app.token("alice", DEMO_PASSWORDS["alice"])
    bob_token = app.token("bob", DEMO_PASSWORDS["bob"])
    project_id = app.api("GET", "/api/projects/", token=alice_token)["results"][0]["id"]
    # seed_demo leaves one approval pending (a PHI scan assigned to admin and alice): bob, a
    # member, may decide it too, so his inbox does not start empty.
    before = app.api("GET", INBOX, token=bob_token)["count"]
    assert before >= 1

    contexts.append(bob_context := new_context(browser))
    bob, bob_errors = open_dashboard(bob_context, app, "bob", DEMO_PASSWORDS["bob"])
    bob_inbox_calls = inbox_requests(bob)
    bob.reload()  # count the dashboard's own REST reads from a fresh load
    expect(bob.locator("#connection")).to_have_attribute("data-state", "open")
    inbox = bob.locator("#inbox")
    count = bob.locator("#inbox-count")
    expect(inbox).to_have_attribute("data-count", str(before))
    expect(count).to_have_text(f"{before} approval{'s' if before != 1 else ''} waiting for you")
    expect(count).to_have_attribute("role", "status")
    expect(bob.locator("#inbox li.inbox-item")).to_have_count(before)
    assert len(bob_inbox_calls) == 1

    contexts.append(outsider_context := new_context(browser))
    outsider, outsider_errors = open_dashboard(outsider_context, app, OUTSIDER[0], OUTSIDER[1])
    expect(outsider.locator("#inbox")).to_have_attribute("data-count", "0")
    expect(outsider.locator("#inbox-count")).to_have_text("No approvals waiting for you")

    # --- alice starts a run that needs an approval ------------------------------------------
    gated = GatedRun(app, alice_token, project_id)
    gated.thread.start()

    expect(inbox).to_have_attribute("data-count", str(before + 1))
    expect(count).to_have_text(f"{before + 1} approvals waiting for you")
    expect(bob).to_have_title(re.compile(rf"^\({before + 1}\) "))
    item = bob.locator("#inbox li.inbox-item").filter(has_text="Demo run ")
    expect(item).to_have_count(1)
    approval_id = item.get_attribute("data-approval-id")
    assert approval_id and approval_id.startswith("gov_")
    expect(item).to_contain_text("PHI scan · High priority")
    expect(item).to_contain_text("Assigned to you")
    expect(item).to_contain_text("assigned to bob")
    expect(item.locator(".inbox-where")).to_have_text(
        re.compile(r"^Run “Demo run .+” in Demo project$")
    )
    # Live, from the event: the page asked the inbox endpoint nothing since it loaded.
    assert len(bob_inbox_calls) == 1
    # The run waits: once its worker says so, the first stage is done, the second not started.
    run_id = item.get_attribute("data-run-id")
    assert run_id
    deadline = time.monotonic() + WAIT_MS / 1000
    while not any(line.startswith("waiting for a decision") for line in gated.lines):
        assert time.monotonic() < deadline, gated.lines
        time.sleep(0.05)
    stages = app.api("GET", f"/api/runs/{run_id}/", token=bob_token)["stages"]
    assert [s["status"] for s in stages][:2] == ["completed", "pending"]
    expect(outsider.locator("#inbox")).to_have_attribute("data-count", "0")
    save_screenshot(bob, "approvals-inbox.png")

    # --- bob grants it from the inbox ---------------------------------------------------------
    grant = item.get_by_role("button", name="Grant")
    expect(grant).to_have_accessible_description(re.compile(r"PHI scan · High priority.*Demo run"))
    grant.click()
    expect(bob.locator(f'#inbox li[data-approval-id="{approval_id}"]')).to_have_count(0)
    expect(inbox).to_have_attribute("data-count", str(before))
    expect(count).to_have_text(f"{before} approval{'s' if before != 1 else ''} waiting for you")

    # --- and the run goes on --------------------------------------------------------------
    gated.thread.join(timeout=60)
    assert not gated.thread.is_alive()
    assert gated.result == run_id, gated.result
    detail = app.api("GET", f"/api/runs/{run_id}/", token=bob_token)
    assert detail["status"] == "completed"
    assert [s["status"] for s in detail["stages"]] == ["completed"] * len(detail["stages"])
    [approval] = [a for a in detail["approvals"] if a["id"] == approval_id]
    assert (approval["status"], approval["decidedBy"]) == ("granted", "bob")
    card = bob.locator(f"#run-{run_id}")
    expect(card).to_have_attribute("data-status", "completed")
    expect(card.locator(f'li[data-approval-id="{approval_id}"]')).to_contain_text("Granted by bob")
    assert app.api("GET", INBOX, token=bob_token)["count"] == before
    assert len(bob_inbox_calls) == 1
    assert bob_errors == [] and outsider_errors == []


def test_an_approval_someone_else_decides_leaves_every_inbox_live(
    browser: Browser, contexts: list[BrowserContext], app: AppServer
) -> None:
    alice_token = app.token("alice", DEMO_PASSWORDS["alice"])
    project_id = app.api("GET", "/api/projects/", token=alice_token)["results"][0]["id"]
    contexts.append(bob_context := new_context(browser))
    bob, bob_errors = open_dashboard(bob_context, app, "bob", DEMO_PASSWORDS["bob"])
    contexts.append(alice_context := new_context(browser))
    alice, alice_errors = open_dashboard(alice_context, app, "alice", DEMO_PASSWORDS["alice"])
    start = int(bob.locator("#inbox").get_attribute("data-count") or "0")

    run = app.api(
        "POST",
        "/api/runs/",
        {"projectId": project_id, "name": "Two approvers", "stages": ["Only"]},
        alice_token,
    )
    approval = app.api(
        "POST",
        f"/api/runs/{run['id']}/approvals/",
        {"governanceType": "ETHICS_REVIEW", "priority": "CRITICAL"},
        alice_token,
    )
    for page in (bob, alice):
        row = page.locator(f'#inbox li[data-approval-id="{approval["id"]}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text("unassigned")
        # CRITICAL heads the inbox.
        expect(page.locator("#inbox li.inbox-item").first).to_have_attribute(
            "data-approval-id", approval["id"]
        )
    expect(bob.locator("#inbox")).to_have_attribute("data-count", str(start + 1))

    # alice denies it from her inbox; bob's inbox drops it from the event alone.
    alice.locator(f'#inbox li[data-approval-id="{approval["id"]}"]').get_by_role(
        "button", name="Deny"
    ).click()
    for page in (alice, bob):
        expect(page.locator(f'#inbox li[data-approval-id="{approval["id"]}"]')).to_have_count(0)
    # The focused button went with its row: focus moves to the row that took its place.
    expect(alice.locator("#inbox li.inbox-item").first).to_be_focused()
    expect(bob.locator("#inbox")).to_have_attribute("data-count", str(start))
    # A run that ends takes its pending approvals out of the inbox too.
    second = app.api(
        "POST",
        f"/api/runs/{run['id']}/approvals/",
        {"governanceType": "DATA_ACCESS", "priority": "LOW"},
        alice_token,
    )
    expect(bob.locator(f'#inbox li[data-approval-id="{second["id"]}"]')).to_be_visible()
    app.api("POST", f"/api/runs/{run['id']}/fail/", {"errorCode": "CANCELLED"}, alice_token)
    expect(bob.locator(f'#inbox li[data-approval-id="{second["id"]}"]')).to_have_count(0)
    expect(bob.locator("#inbox")).to_have_attribute("data-count", str(start))
    assert bob_errors == [] and alice_errors == []


def test_an_approval_in_a_project_bob_just_joined_counts_only_where_he_may_decide(
    browser: Browser, contexts: list[BrowserContext], app: AppServer
) -> None:
    charlie = app.token(OUTSIDER[0], OUTSIDER[1])
    contexts.append(bob_context := new_context(browser))
    bob, bob_errors = open_dashboard(bob_context, app, "bob", DEMO_PASSWORDS["bob"])
    start = int(bob.locator("#inbox").get_attribute("data-count") or "0")

    runs = {}
    for role, name in (("member", "Charlie deciding"), ("viewer", "Charlie viewing")):
        project = app.api("POST", "/api/projects/", {"name": name}, charlie)
        runs[role] = app.api(
            "POST",
            "/api/runs/",
            {"projectId": project["id"], "name": f"Run for a {role}", "stages": ["Only"]},
            charlie,
        )
    # While bob's page is open, charlie adds him to both projects, which the page has never
    # loaded: as a member (may decide), then as a viewer (may not).
    for role, run in runs.items():
        app.api(
            "POST",
            f"/api/projects/{run['projectId']}/members/",
            {"username": "bob", "role": role},
            charlie,
        )
    # bob's socket widens at its next membership re-check (WS_REAUTH_INTERVAL), from then on:
    # move the viewer's run until the page shows it. The re-check that saw the later membership
    # saw the earlier one too.
    viewer_run = runs["viewer"]
    stage_id = viewer_run["stages"][0]["id"]
    app.api("POST", f"/api/runs/{viewer_run['id']}/start/", None, charlie)
    app.api("POST", f"/api/stages/{stage_id}/start/", None, charlie)
    viewer_card = bob.locator(f"#run-{viewer_run['id']}")
    for percent in range(1, 61):
        body = {"progress": percent}
        app.api("POST", f"/api/stages/{stage_id}/progress/", body, charlie)
        try:
            expect(viewer_card).to_be_visible(timeout=500)
            break
        except AssertionError:
            assert percent < 60, "bob's page never heard of the project he joined"

    # The member project's first event on bob's page is the approval request itself: the page
    # does not know his role there until it has loaded the project, and counts it only then.
    asked = {
        role: app.api(
            "POST",
            f"/api/runs/{run['id']}/approvals/",
            {"governanceType": "DATA_ACCESS", "priority": "MEDIUM"},
            charlie,
        )["id"]
        for role, run in runs.items()
    }
    member_row = bob.locator(f'#inbox li[data-approval-id="{asked["member"]}"]')
    expect(member_row).to_be_visible()
    expect(member_row.locator(".inbox-where")).to_have_text(
        "Run “Run for a member” in Charlie deciding"
    )
    viewer_row = viewer_card.locator(f'li.approval[data-approval-id="{asked["viewer"]}"]')
    expect(viewer_row).to_be_visible()  # a viewer sees it on the run's card, with no buttons
    expect(viewer_row.get_by_role("button")).to_have_count(0)
    expect(bob.locator(f'#inbox li[data-approval-id="{asked["viewer"]}"]')).to_have_count(0)
    expect(bob.locator("#inbox")).to_have_attribute("data-count", str(start + 1))
    assert bob_errors == []
