"""seed_demo (idempotent demo data) and demo_run (a run driven over the REST API)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
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


# --- demo_run gated on a person's decision -------------------------------------------------


class GatedRun:
    """`run_demo(await_approval=True)` in a thread, as a pipeline waiting on a person."""

    def __init__(self, url: str, token: str, project_id: str, **options: Any) -> None:
        self.lines: list[str] = []
        self.result: str | BaseException | None = None
        self.thread = threading.Thread(
            target=self._drive, args=(url, token, project_id, options), daemon=True
        )
        self.thread.start()

    def _drive(self, url: str, token: str, project_id: str, options: dict[str, Any]) -> None:
        try:
            self.result = run_demo(
                url,
                token,
                project_id,
                pace=0,
                log=self.lines.append,
                await_approval=True,
                **options,
            )
        except BaseException as exc:
            self.result = exc

    def wait_until_waiting(self) -> Approval:
        until(lambda: any(line.startswith("waiting for a decision") for line in self.lines))
        return Approval.objects.get()

    def finish(self) -> str | BaseException | None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.result


def until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_gated_run_waits_for_a_person_to_grant_then_goes_on(world: Any, live_server: Any) -> None:
    gated = GatedRun(live_server.url, world.token(world.alice), world.project.pk, assign_to=["bob"])
    approval = gated.wait_until_waiting()
    run = approval.run
    assert approval.status == ApprovalStatus.PENDING
    assert list(approval.assigned_to.values_list("username", flat=True)) == ["bob"]
    first, second, *_ = run.stages.order_by("position")
    # The gate holds: the first stage is done, the second cannot start before the decision.
    assert (first.status, second.status) == ("completed", "pending")
    response = world.client(world.bob).post(f"/api/approvals/{approval.pk}/grant/")
    assert response.status_code == 200
    assert gated.finish() == run.pk
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert Approval.objects.get().decided_by == world.bob
    assert f"approval {approval.pk} granted" in gated.lines


def test_a_gated_run_fails_when_its_approval_is_denied(world: Any, live_server: Any) -> None:
    gated = GatedRun(live_server.url, world.token(world.alice), world.project.pk)
    approval = gated.wait_until_waiting()
    services.decide_approval(approval.pk, granted=False, decided_by=world.bob)
    assert gated.finish() == approval.run_id
    run = Run.objects.get()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "APPROVAL_DENIED")
    assert list(run.stages.order_by("position").values_list("status", flat=True)) == [
        "completed",
        "pending",
        "pending",
        "pending",
    ]


def test_a_gated_run_gives_up_when_nobody_decides_in_time(world: Any, live_server: Any) -> None:
    gated = GatedRun(
        live_server.url, world.token(world.alice), world.project.pk, approval_timeout=0.3
    )
    result = gated.finish()
    assert isinstance(result, DemoError)
    assert "was not decided within 0.3 s" in str(result)
    run = Run.objects.get()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "INTERNAL_ERROR")
    assert Approval.objects.get().status == ApprovalStatus.PENDING


def test_the_command_waits_for_the_approval_when_asked(world: Any, live_server: Any) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"was not decided within 0\.2 s"):
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
            "--await-approval",
            "--assign",
            "bob",
            "--assign",
            "alice",
            "--approval-timeout",
            "0.2",
            stdout=out,
        )
    assert "assigned to bob, alice" in out.getvalue()
    assert sorted(Approval.objects.get().assigned_to.values_list("username", flat=True)) == [
        "alice",
        "bob",
    ]
