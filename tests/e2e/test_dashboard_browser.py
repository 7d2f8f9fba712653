"""The dashboard in a real browser against the real server: live progress, approvals, the
connection indicator, and a server restart mid-run with no event lost.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's sync API; nothing is
downloaded. Set UPDATE_DOCS_SCREENSHOT=1 to refresh docs/dashboard.png from this run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from devtools.servers import DEMO_PASSWORDS, ROOT, AppServer, RedisServer

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # generous: a 2-core machine running other suites can stall for seconds
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
OUTSIDER = ("olivia", "olivia-dev-pass", "Oncology imaging")


# --- fixtures ------------------------------------------------------------------------------


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
def daphne_app() -> Iterator[AppServer]:
    with AppServer("daphne") as app:
        # An outsider with a project of their own; seed_demo only makes members of one project.
        name, password, project = OUTSIDER
        app.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; from runs import services; "
            f"u = User.objects.create_user({name!r}, '{name}@example.org', {password!r}); "
            f"services.create_project({project!r}, owner=u)",
        )
        yield app


@pytest.fixture(scope="module")
def small_log_app() -> Iterator[AppServer]:
    # A socket that missed more than 3 events is told `resync.required` instead of a replay.
    with AppServer("daphne", env={"WS_RESUME_MAX_EVENTS": "3"}) as app:
        yield app


@pytest.fixture(scope="module")
def uvicorn_redis_app() -> Iterator[AppServer]:
    # Two workers sharing events through Redis: the page's socket and the REST calls that
    # cause the events may well land on different processes.
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with (
        RedisServer() as redis,
        AppServer("uvicorn", env={"REDIS_URL": redis.url}, workers=2) as app,
    ):
        yield app


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # Reduced motion: progress bars jump instead of animating, so screenshots show final widths.
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", reduced_motion="reduce"
    )
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


# --- helpers -------------------------------------------------------------------------------


def open_dashboard(
    context: BrowserContext, app: AppServer, username: str, password: str
) -> tuple[Page, list[str]]:
    """Log in through the form, as a person would, and wait for the live connection.

    Returns the page and the list its uncaught script errors are collected in."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(app.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(app.url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(page.locator("#projects")).not_to_have_attribute("aria-busy", "true")
    return page, errors


def stage_bar(page: Page, stage_id: str) -> Any:
    return page.locator(f'li[data-stage-id="{stage_id}"] [role="progressbar"]')


def expect_progress(page: Page, stage_id: str, percent: int, message: str | None = None) -> None:
    expect(stage_bar(page, stage_id)).to_have_attribute("aria-valuenow", str(percent))
    row = page.locator(f'li[data-stage-id="{stage_id}"]')
    expect(row.locator(".stage-percent")).to_have_text(f"{percent}%")
    if message is not None:
        expect(row.locator(".stage-message")).to_contain_text(message)


def feed_ids(page: Page, run_id: str) -> list[int]:
    items = page.locator(f'#event-feed li[data-run-id="{run_id}"]')
    return [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.eventId)")]


def api_event_ids(app: AppServer, token: str, run_id: str) -> list[int]:
    page = app.api("GET", f"/api/events/?run={run_id}&limit=1000", token=token)
    return [event["id"] for event in page["results"]]


def progress(app: AppServer, token: str, stage_id: str, percent: int, rows: int = 400) -> str:
    done = rows * percent // 100
    message = f"Processed {done} of {rows} rows"
    app.api(
        "POST",
        f"/api/stages/{stage_id}/progress/",
        {"progress": percent, "itemsProcessed": done, "itemsTotal": rows, "statusMessage": message},
        token,
    )
    return message


def save_screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(path, DOCS_SCREENSHOT)
    return path


# --- the scenario --------------------------------------------------------------------------


def test_dashboard_follows_a_run_live_and_survives_a_server_restart(
    context: BrowserContext, browser: Browser, daphne_app: AppServer
) -> None:
    app = daphne_app
    outsider_context = browser.new_context()
    outsider_context.set_default_timeout(WAIT_MS)
    try:
        outsider, outsider_errors = open_dashboard(outsider_context, app, OUTSIDER[0], OUTSIDER[1])
        page, page_errors = open_dashboard(context, app, "alice", DEMO_PASSWORDS["alice"])
        token = app.token("alice", DEMO_PASSWORDS["alice"])
        project_id = app.api("GET", "/api/projects/", token=token)["results"][0]["id"]

        # --- a run appears and moves --------------------------------------------------------
        run = app.api(
            "POST",
            "/api/runs/",
            {
                "projectId": project_id,
                "name": "Cohort feature extraction",
                "stages": ["Extract", "Transform", "Summarise"],
            },
            token,
        )
        run_id = run["id"]
        s1, s2, s3 = (stage["id"] for stage in run["stages"])
        card = page.locator(f"#run-{run_id}")
        expect(card).to_be_visible()
        expect(card.locator("h3")).to_have_text("Cohort feature extraction")
        expect(card.locator(".run-badge")).to_contain_text("Created")

        app.api("POST", f"/api/runs/{run_id}/start/", None, token)
        expect(card).to_have_attribute("data-status", "running")
        expect(card.locator(".run-badge")).to_contain_text("Running")

        app.api("POST", f"/api/stages/{s1}/start/", None, token)
        expect(page.locator(f'li[data-stage-id="{s1}"]')).to_have_attribute(
            "data-status", "running"
        )
        for percent in (25, 50, 100):
            # One step at a time, each seen on the page before the next is sent.
            message = progress(app, token, s1, percent)
            expect_progress(page, s1, percent, message)

        app.api(
            "POST",
            f"/api/runs/{run_id}/artifacts/",
            {
                "kind": "dataset",
                "name": "features.parquet",
                "sizeBytes": 48_213,
                "contentType": "application/octet-stream",
                "stageId": s1,
            },
            token,
        )
        expect(card.locator(".artifact-name")).to_have_text(["features.parquet"])
        app.api("POST", f"/api/stages/{s1}/complete/", None, token)
        expect(page.locator(f'li[data-stage-id="{s1}"]')).to_have_attribute(
            "data-status", "completed"
        )

        approval = app.api(
            "POST",
            f"/api/runs/{run_id}/approvals/",
            {"governanceType": "PHI_SCAN", "priority": "HIGH", "assignedTo": ["alice"]},
            token,
        )
        approval_row = card.locator(f'li[data-approval-id="{approval["id"]}"]')
        expect(approval_row).to_contain_text("Assigned to alice")
        grant = approval_row.get_by_role("button", name="Grant")
        expect(grant).to_be_visible()
        expect(approval_row.get_by_role("button", name="Deny")).to_be_visible()

        app.api("POST", f"/api/stages/{s2}/start/", None, token)
        message = progress(app, token, s2, 50)
        expect_progress(page, s2, 50, message)
        save_screenshot(page, "dashboard-midrun.png")

        # --- grant from the page ------------------------------------------------------------
        grant.click()
        expect(approval_row).to_have_attribute("data-status", "granted")
        expect(approval_row.get_by_role("button")).to_have_count(0)
        expect(approval_row).to_contain_text("Granted by alice")
        expect(
            page.locator(f'#event-feed li[data-run-id="{run_id}"][data-type="approval.granted"]')
        ).to_have_count(1)
        assert (
            app.api("GET", f"/api/runs/{run_id}/", token=token)["approvals"][0]["status"]
            == "granted"
        )

        # --- the server goes away mid-run ---------------------------------------------------
        before_stop = set(feed_ids(page, run_id))
        app.stop()
        connection = page.locator("#connection")
        expect(connection).to_have_attribute("data-state", re.compile(r"^(reconnecting|offline)$"))
        expect(connection).to_contain_text(re.compile(r"Reconnecting|Offline"))
        expect(page.locator("#reconnect-button")).to_be_visible()

        # ... comes back on the same port and database, and the run moves on at once, most
        # likely before the page's next reconnect attempt: those events then reach it only
        # through the resume from its lastEventId.
        app.migrate = app.seed = False
        app.start()
        # One progress report per stage here, so the server has nothing to coalesce.
        progress(app, token, s2, 80)
        app.api("POST", f"/api/stages/{s2}/complete/", None, token)
        app.api("POST", f"/api/stages/{s3}/start/", None, token)
        progress(app, token, s3, 100)
        app.api(
            "POST",
            f"/api/runs/{run_id}/artifacts/",
            {
                "kind": "report",
                "name": "summary.pdf",
                "sizeBytes": 120_551,
                "contentType": "application/pdf",
            },
            token,
        )
        app.api("POST", f"/api/stages/{s3}/complete/", None, token)
        app.api("POST", f"/api/runs/{run_id}/complete/", None, token)

        expect(connection).to_have_attribute("data-state", "open")
        expect(connection).to_have_text("Connected")
        expect(card).to_have_attribute("data-status", "completed")
        for stage_id in (s1, s2, s3):
            expect(page.locator(f'li[data-stage-id="{stage_id}"]')).to_have_attribute(
                "data-status", "completed"
            )
            expect_progress(page, stage_id, 100)
        expect(card.locator(".artifact-name")).to_have_text(["features.parquet", "summary.pdf"])

        # --- no event lost, none twice ------------------------------------------------------
        expected = api_event_ids(app, token, run_id)
        expect(page.locator(f'#event-feed li[data-run-id="{run_id}"]')).to_have_count(len(expected))
        seen = feed_ids(page, run_id)
        assert len(seen) == len(set(seen)), f"duplicates in the feed: {sorted(seen)}"
        assert set(seen) == set(expected)
        assert before_stop < set(seen)
        assert page_errors == []

        # --- a user of another project saw none of it ---------------------------------------
        expect(outsider.locator(".project h2")).to_have_text([OUTSIDER[2]])
        expect(outsider.locator("#connection")).to_have_attribute("data-state", "open")
        assert outsider.locator(f"#run-{run_id}").count() == 0
        assert outsider.locator(f'#event-feed li[data-run-id="{run_id}"]').count() == 0
        assert outsider.locator("#event-feed li").count() == 0
        assert "Cohort feature extraction" not in outsider.content()
        assert outsider_errors == []
    finally:
        outsider_context.close()


def test_staff_start_a_demo_run_from_the_page(
    context: BrowserContext, daphne_app: AppServer
) -> None:
    app = daphne_app
    page, page_errors = open_dashboard(context, app, "admin", DEMO_PASSWORDS["admin"])
    known = set(page.locator("article.run").evaluate_all("els => els.map(e => e.id)"))
    page.get_by_role("button", name="Start demo run").click()
    expect(page.locator("#demo-status")).to_have_text(re.compile("Demo run started"))
    # The runner (a thread in the server) drives a new run through the REST API.
    new_card = page.locator("article.run").filter(has_text=re.compile(r"^Demo run \d"))
    expect(new_card).to_have_count(1)
    assert new_card.get_attribute("id") not in known
    expect(new_card).to_have_attribute("data-status", "running")
    expect(new_card.locator('[role="progressbar"]').first).not_to_have_attribute(
        "aria-valuenow", "0"
    )
    assert page_errors == []


def test_dashboard_reloads_its_state_when_told_to_resync(
    context: BrowserContext, small_log_app: AppServer
) -> None:
    app = small_log_app
    page, page_errors = open_dashboard(context, app, "alice", DEMO_PASSWORDS["alice"])
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    project_id = app.api("GET", "/api/projects/", token=token)["results"][0]["id"]
    run = app.api(
        "POST",
        "/api/runs/",
        {"projectId": project_id, "name": "Resync run", "stages": ["First", "Second"]},
        token,
    )
    card = page.locator(f"#run-{run['id']}")
    expect(card).to_have_attribute("data-status", "created")

    app.stop()
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", re.compile(r"^(reconnecting|offline)$")
    )
    # Keep the page off the network until the events below exist, so that its reconnect is
    # sure to come too late for a replay.
    context.set_offline(True)
    app.migrate = app.seed = False
    app.start()
    # More events than the server will replay: the page must reload over REST instead.
    app.api("POST", f"/api/runs/{run['id']}/start/", None, token)
    for stage in run["stages"]:
        app.api("POST", f"/api/stages/{stage['id']}/start/", None, token)
        app.api("POST", f"/api/stages/{stage['id']}/complete/", None, token)
    app.api("POST", f"/api/runs/{run['id']}/complete/", None, token)
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    context.set_offline(False)  # the page's "online" handler reconnects at once

    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(card).to_have_attribute("data-status", "completed")
    for stage in run["stages"]:
        expect_progress(page, stage["id"], 100)
    expect(page.locator("#notice")).to_be_hidden()
    # The proof that this came from the REST reload and not a replay: the missed events
    # never reached the feed.
    assert len(feed_ids(page, run["id"])) < len(api_event_ids(app, token, run["id"]))
    # Live events still flow after the reload.
    second = app.api(
        "POST",
        "/api/runs/",
        {"projectId": project_id, "name": "After resync", "stages": ["Only"]},
        token,
    )
    expect(page.locator(f"#run-{second['id']}")).to_be_visible()
    assert page_errors == []


def test_dashboard_works_under_uvicorn_with_redis(
    context: BrowserContext, uvicorn_redis_app: AppServer
) -> None:
    app = uvicorn_redis_app
    page, page_errors = open_dashboard(context, app, "bob", DEMO_PASSWORDS["bob"])
    token = app.token("bob", DEMO_PASSWORDS["bob"])
    project_id = app.api("GET", "/api/projects/", token=token)["results"][0]["id"]
    run = app.api(
        "POST",
        "/api/runs/",
        {"projectId": project_id, "name": "Uvicorn smoke run", "stages": ["Only stage"]},
        token,
    )
    stage_id = run["stages"][0]["id"]
    app.api("POST", f"/api/runs/{run['id']}/start/", None, token)
    app.api("POST", f"/api/stages/{stage_id}/start/", None, token)
    message = progress(app, token, stage_id, 40)
    expect_progress(page, stage_id, 40, message)
    expect(page.locator(f"#run-{run['id']}")).to_have_attribute("data-status", "running")
    expected = api_event_ids(app, token, run["id"])
    expect(page.locator(f'#event-feed li[data-run-id="{run["id"]}"]')).to_have_count(len(expected))
    assert sorted(feed_ids(page, run["id"])) == expected
    assert page_errors == []
