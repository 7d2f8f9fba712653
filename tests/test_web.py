"""The browser pages: the dashboard shell, the login page and the staff demo button."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token

from runs import services
from tests.conftest import PASSWORD, World
from web import demo


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_config(content: str) -> dict[str, Any]:
    marker = '<script id="researchflow-config" type="application/json">'
    start = content.index(marker) + len(marker)
    return dict(json.loads(content[start : content.index("</script>", start)]))


class RecordingRunner:
    """Stands in for `run_demo`: records the call instead of driving a run over HTTP."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.called = threading.Event()
        self.thread_names: list[str] = []

    def __call__(self, base_url: str, token: str, **kwargs: Any) -> str:
        self.calls.append({"base_url": base_url, "token": token, **kwargs})
        self.thread_names.append(threading.current_thread().name)
        self.called.set()
        return "run_recorded"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> RecordingRunner:
    recorder = RecordingRunner()
    monkeypatch.setattr(demo, "run_demo", recorder)
    return recorder


# --- dashboard -----------------------------------------------------------------------------


def test_it_sends_anonymous_visitors_to_the_login_page(db: Any) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_shows_a_member_their_projects_only(world: World) -> None:
    response = logged_in(world.alice).get("/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "Cardiology cohort" in content
    assert "Charlie" not in content


def test_it_hides_other_projects_from_an_outsider(world: World) -> None:
    content = logged_in(world.charlie).get("/").content.decode()
    assert "Charlie&#x27;s project" in content
    assert "Cardiology cohort" not in content


def test_it_shows_a_viewer_the_project_too(world: World) -> None:
    content = logged_in(world.victor).get("/").content.decode()
    assert "Cardiology cohort" in content


def test_it_escapes_project_names(world: World) -> None:
    services.create_project("<script>alert(1)</script>", owner=world.alice)
    content = logged_in(world.alice).get("/").content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_it_loads_the_dashboard_module_and_its_config(world: World) -> None:
    response = logged_in(world.bob).get("/")
    content = response.content.decode()
    assert '<script type="module" src="/static/researchflow/dashboard.js">' in content
    assert 'role="log"' in content and 'aria-live="polite"' in content
    assert page_config(content) == {
        "websocketUrl": None,
        "username": "bob",
        "isStaff": False,
        "demoUrl": None,
    }
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]


def test_it_passes_the_websocket_url_setting_to_the_page(world: World, settings: Any) -> None:
    settings.WEBSOCKET_URL = "wss://events.example.org/ws"
    content = logged_in(world.bob).get("/").content.decode()
    assert page_config(content)["websocketUrl"] == "wss://events.example.org/ws"


def test_it_shows_the_demo_button_to_staff_only(world: World) -> None:
    staff = logged_in(world.sam).get("/").content.decode()
    member = logged_in(world.alice).get("/").content.decode()
    assert "Start demo run" in staff
    assert page_config(staff)["demoUrl"] == "/demo/start/"
    assert "Start demo run" not in member


def test_it_answers_405_to_a_post_on_the_dashboard(world: World) -> None:
    assert logged_in(world.alice).post("/").status_code == 405


# --- login ---------------------------------------------------------------------------------


def test_it_renders_the_login_page(db: Any) -> None:
    response = Client().get("/accounts/login/?next=/")
    assert response.status_code == 200
    content = response.content.decode()
    assert '<label for="id_username">Username</label>' in content
    assert '<label for="id_password">Password</label>' in content
    assert 'name="next" value="/"' in content
    assert "<main" in content


def test_it_logs_in_through_the_form(world: World) -> None:
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_it_says_why_a_login_failed(world: World) -> None:
    response = Client().post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()


# --- demo button ---------------------------------------------------------------------------


def test_it_starts_a_demo_run_in_a_background_thread_for_staff(
    world: World, runner: RecordingRunner
) -> None:
    response = logged_in(world.sam).post("/demo/start/")
    assert response.status_code == 202
    assert response.json()["started"] is True
    assert runner.called.wait(5), "the runner was not called"
    [call] = runner.calls
    assert call["base_url"] == "http://testserver"
    assert call["token"] == Token.objects.get(user=world.sam).key
    assert call["project_id"] is None
    assert runner.thread_names == ["researchflow-demo-run"]


def test_it_runs_the_demo_in_a_chosen_project(world: World, runner: RecordingRunner) -> None:
    response = logged_in(world.sam).post("/demo/start/", {"project": world.project.pk})
    assert response.status_code == 202
    assert runner.called.wait(5)
    assert runner.calls[0]["project_id"] == world.project.pk


def test_it_refuses_an_unknown_project(world: World, runner: RecordingRunner) -> None:
    response = logged_in(world.sam).post("/demo/start/", {"project": "prj_doesnotexist"})
    assert response.status_code == 400
    assert runner.calls == []


def test_it_redirects_a_plain_form_post_back_to_the_dashboard(
    world: World, runner: RecordingRunner
) -> None:
    response = logged_in(world.sam).post("/demo/start/", HTTP_ACCEPT="text/html")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert runner.called.wait(5)


@pytest.mark.parametrize("persona", ["alice", "bob", "victor", "charlie"])
def test_it_refuses_the_demo_to_non_staff(
    world: World, runner: RecordingRunner, persona: str
) -> None:
    response = logged_in(getattr(world, persona)).post("/demo/start/")
    assert response.status_code == 403
    assert runner.calls == []


def test_it_refuses_the_demo_to_anonymous_visitors(db: Any, runner: RecordingRunner) -> None:
    assert Client().post("/demo/start/").status_code == 403
    assert runner.calls == []


def test_it_answers_405_to_get_on_the_demo_view(world: World, runner: RecordingRunner) -> None:
    assert logged_in(world.sam).get("/demo/start/").status_code == 405
    assert runner.calls == []


def test_it_requires_the_csrf_token_for_the_demo(world: World, runner: RecordingRunner) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.sam)
    assert client.post("/demo/start/").status_code == 403
    assert runner.calls == []

    client.get("/")  # sets the CSRF cookie, as the page does
    token = client.cookies["csrftoken"].value
    assert client.post("/demo/start/", HTTP_X_CSRFTOKEN=token).status_code == 202
    assert runner.called.wait(5)


def test_it_limits_concurrent_demo_runs(
    world: World, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "MAX_CONCURRENT", 0)
    response = logged_in(world.sam).post("/demo/start/")
    assert response.status_code == 429
    assert runner.calls == []


def test_the_runner_thread_releases_its_slot(world: World, runner: RecordingRunner) -> None:
    thread = demo.start_demo("http://testserver", "token")
    thread.join(5)
    assert not thread.is_alive()
    assert thread.daemon
    assert demo.running() == 0
