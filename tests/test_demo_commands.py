"""seed_demo (idempotent demo data) and demo_run (a run driven over the REST API)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

from events.models import Event
from runs import services
from runs.demo import DemoError, obtain_token, run_demo
from runs.management.commands.seed_demo import DEMO_PROJECT
from runs.models import Approval, ApprovalStatus, Artifact, Project, Run, RunStatus

from .conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts() -> tuple[int, ...]:
    return (
        User.objects.count(),
        Project.objects.count(),
        Run.objects.count(),
        Artifact.objects.count(),
        Approval.objects.count(),
        Event.objects.count(),
    )


# --- seed_demo -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_seeds_users_a_project_and_runs_in_several_states(settings: Any) -> None:
    settings.DEBUG = True
    output = seed()
    assert "password admin-dev-pass" in output
    admin = authenticate(username="admin", password="admin-dev-pass")
    assert admin is not None and admin.is_superuser
    assert authenticate(username="alice", password="alice-dev-pass") is not None
    project = Project.objects.get(name=DEMO_PROJECT)
    assert set(project.memberships.values_list("user__username", flat=True)) == {
        "admin",
        "alice",
        "bob",
    }
    states = sorted(Run.objects.filter(project=project).values_list("status", flat=True))
    assert states == [RunStatus.COMPLETED, RunStatus.CREATED, RunStatus.FAILED]
    completed = Run.objects.get(status=RunStatus.COMPLETED)
    assert completed.artifacts.count() == 2
    assert Event.objects.filter(run_id=completed.pk, type="run.completed").exists()


@pytest.mark.django_db
def test_it_seeds_nothing_new_the_second_time(settings: Any) -> None:
    settings.DEBUG = True
    seed()
    before = counts()
    output = seed()
    assert counts() == before
    assert "exists (password unchanged)" in output and "password admin" not in output


@pytest.mark.django_db
def test_it_takes_the_demo_password_from_the_environment(settings: Any, monkeypatch: Any) -> None:
    settings.DEBUG = True
    monkeypatch.setenv("DEMO_PASSWORD", "from-env-123")
    seed()
    assert authenticate(username="bob", password="from-env-123") is not None


@pytest.mark.django_db
def test_it_refuses_to_seed_with_debug_off(settings: Any) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        seed()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_it_seeds_with_debug_off_when_forced(settings: Any) -> None:
    settings.DEBUG = False
    seed("--force")
    assert Run.objects.count() == 3


# --- demo_run against a live server --------------------------------------------------------


def test_it_drives_a_whole_run_over_the_api(world: Any, live_server: Any) -> None:
    lines: list[str] = []
    run_id = run_demo(
        live_server.url, world.token(world.alice), world.project.pk, pace=0, log=lines.append
    )
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.COMPLETED and run.created_by == world.alice
    assert run.artifacts.count() == 2
    assert run.approvals.get().status == ApprovalStatus.GRANTED
    assert set(run.stages.values_list("status", flat=True)) == {"completed"}
    types = list(Event.objects.filter(run_id=run_id).values_list("type", flat=True))
    assert types[0] == "run.created" and types[-1] == "run.completed"
    assert types.count("stage.progress") >= 4 * 5
    assert any("Processing 400 of 1000 rows" in line for line in lines)
    assert world.token(world.alice) not in "\n".join(lines)


def test_it_picks_a_writable_project_when_none_is_given(world: Any, live_server: Any) -> None:
    run_id = run_demo(live_server.url, world.token(world.bob), pace=0, log=lambda _line: None)
    assert Run.objects.get(pk=run_id).project == world.project


def test_it_creates_a_project_for_a_user_without_one(world: Any, live_server: Any) -> None:
    run_id = run_demo(live_server.url, world.token(world.victor), pace=0, log=lambda _line: None)
    project = Run.objects.get(pk=run_id).project
    assert project != world.project and services.membership_role(project, world.victor) == "owner"


def test_it_runs_the_command_end_to_end(world: Any, live_server: Any) -> None:
    out = io.StringIO()
    call_command(
        "demo_run",
        "--url",
        live_server.url,
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--pace",
        "0",
        "--project",
        world.project.pk,
        stdout=out,
    )
    assert "done: run run_" in out.getvalue()
    assert Run.objects.get().status == RunStatus.COMPLETED


def test_it_fails_clearly_on_bad_credentials(world: Any, live_server: Any) -> None:
    with pytest.raises(CommandError, match="login as 'alice' failed") as caught:
        call_command(
            "demo_run",
            "--url",
            live_server.url,
            "--username",
            "alice",
            "--password",
            "nope",
            "--pace",
            "0",
            stdout=io.StringIO(),
        )
    assert caught.value.returncode == 1
    assert not Run.objects.exists()


def test_it_stops_with_a_clear_error_when_a_step_is_refused(world: Any, live_server: Any) -> None:
    with pytest.raises(DemoError, match="HTTP 403"):
        run_demo(
            live_server.url,
            world.token(world.victor),
            world.project.pk,
            pace=0,
            log=lambda _line: None,
        )
    assert not Run.objects.exists()


def test_it_obtains_a_token_over_http(world: Any, live_server: Any) -> None:
    token = obtain_token(live_server.url, "bob", PASSWORD)
    assert token == Token.objects.get(user=world.bob).key


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_exits_1_when_the_server_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "RESEARCHFLOW_VAR_DIR": str(tmp_path), "DEBUG": "1"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "demo_run",
            "--url",
            f"http://127.0.0.1:{_free_port()}",
            "--pace",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(CommandError, match="must be an http"):
        call_command("demo_run", "--url", "file:///etc/passwd", stdout=io.StringIO())
